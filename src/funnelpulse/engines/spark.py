"""The scale-out engine: the same SQL models, transpiled to Spark SQL with SQLGlot, run by Spark.

Bronze is read from whatever the warehouse holds (a Delta table's current files, or plain
partitioned Parquet). Results are always Delta: through delta-spark when its jars are on Spark's
classpath, otherwise Spark's executors write the Parquet files and the driver commits them to the
Delta log with deltalake (no jars needed), so both engines can write into the same warehouse.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import faults, tables
from ..console import Progress
from ._typing import SparkSession
from .spark_delta import write_delta
from .spark_session import SparkConfig, spark_session, using_spark

__all__ = ["SparkConfig", "SparkEngine", "spark_session", "using_spark"]

if TYPE_CHECKING:
    import duckdb

    from ..config import Settings
    from ..ingest import IngestResult
    from ..streaming.windows import StreamResult
from ..errors import FunnelPulseError, WarehouseError
from .base import (
    GOLD_MODELS,
    SILVER_MODEL,
    BuildResult,
    DateRange,
    Model,
    StreamOptions,
    covered_dates,
    rows_per_date,
)

log = logging.getLogger(__name__)


def to_spark_sql(model: Model) -> str:
    """The model's DuckDB SQL in Spark's dialect (one source of truth for both engines)."""
    from .dialect import to_spark

    return to_spark(model.sql)


def has_delta(spark: SparkSession) -> bool:
    try:
        jvm: Any = spark.sparkContext._jvm
        jvm.java.lang.Class.forName("io.delta.sql.DeltaSparkSessionExtension")
        return "DeltaSparkSessionExtension" in (spark.conf.get("spark.sql.extensions", "") or "")
    except Exception:
        return False


def read_table(spark: SparkSession, path: str) -> Any:
    """A warehouse table as a DataFrame: Delta through its current file list, or Parquet."""
    if tables.is_delta(path):
        if has_delta(spark):
            return spark.read.format("delta").load(path)
        files = tables.dataset(path).files
        if not files:
            raise WarehouseError(f"Table {path} has no data files. Run `funnelpulse ingest` first")
        return spark.read.option("basePath", path).parquet(*files)
    if not tables.exists(path):
        raise WarehouseError(f"Table {path} not found. Run `funnelpulse ingest FILE...` first")
    return spark.read.parquet(path)


class SparkEngine:
    name = "spark"
    ingests_files_together = True

    def __init__(
        self,
        master: str | None = "local[*]",
        shuffle_partitions: int = 8,
        config: SparkConfig | None = None,
        max_future_s: int = 3600,
    ) -> None:
        self.config = config or SparkConfig(master, shuffle_partitions)
        self.max_future_s = max_future_s

    @classmethod
    def from_settings(cls, settings: Settings) -> SparkEngine:
        return cls(config=SparkConfig.from_settings(settings), max_future_s=settings.max_future_s)

    def ingest(self, warehouse: str, paths: list[str | Path], progress: Progress) -> IngestResult:
        from .. import warehouse as safety
        from .spark_ingest import ingest_spark

        with safety.writing(warehouse, progress):
            return ingest_spark(warehouse, paths, progress, self.config, self.max_future_s)

    def stream(
        self, warehouse: str, settings: Settings, source: str, options: StreamOptions
    ) -> StreamResult:
        """Spark Structured Streaming, for clusters."""
        from .spark_stream import run_stream

        if options.repair:
            raise FunnelPulseError(
                "--repair starts over the embedded engine's live tables. On Spark, delete the "
                "live tables and the stream's checkpoint folder, then run the stream again"
            )

        return run_stream(
            warehouse,
            settings,
            source,
            until_idle_s=options.until_idle_s,
            trigger_s=options.trigger_s or 2.0,
            checkpoint=options.checkpoint,
            options={
                "max_rows": str(options.max_rows),
                "broker_timeout_s": str(options.broker_timeout_s),
            },
            alert_sinks=options.alert_sinks,
            kafka_options=options.kafka_options,
        )

    def load_cube(
        self,
        con: duckdb.DuckDBPyConnection,
        silver: str,
        first: date | None,
        progress: Progress,
        dates: list[date] | None = None,
    ) -> None:
        """The heavy step, silver -> cube, runs on Spark (the cluster); the cube is small."""
        from ..anomaly.series import CUBE_SELECT
        from .dialect import to_spark

        with using_spark(self.config, progress) as spark:
            frame = read_table(spark, silver)
            if first:
                frame = frame.where(frame.event_date >= first)
            if dates is not None:
                frame = frame.where(frame.event_date.isin(list(dates)))
            frame.createOrReplaceTempView("silver_events")
            con.register("cube_rows", spark.sql(to_spark(CUBE_SELECT)).toArrow())
        con.execute("CREATE OR REPLACE TEMP TABLE cube AS SELECT * FROM cube_rows")

    def build(self, warehouse: str, dates: DateRange, progress: Progress) -> BuildResult:
        with using_spark(self.config, progress) as spark:
            return self._build(spark, warehouse, dates, progress)

    def _build(
        self, spark: SparkSession, warehouse: str, dates: DateRange, progress: Progress
    ) -> BuildResult:
        bronze_path = tables.table_path(warehouse, tables.BRONZE)
        bronze = read_table(spark, bronze_path)
        covered = None
        if not dates.is_all:
            covered = covered_dates(
                dates, sorted(rows_per_date(tables.dataset(bronze_path), dates))
            )
        if dates.since:
            bronze = bronze.where(bronze.event_date >= dates.since)
        if dates.until:
            bronze = bronze.where(bronze.event_date <= dates.until)
        if dates.only is not None:
            bronze = bronze.where(bronze.event_date.isin(sorted(dates.only)))
        bronze.createOrReplaceTempView("bronze_events")
        result = BuildResult(engine=self.name)
        progress.step("Building silver_events")
        silver_path = tables.table_path(warehouse, SILVER_MODEL.name)
        result.rows[SILVER_MODEL.name] = _write(spark, SILVER_MODEL, silver_path, covered)
        faults.checkpoint("build.silver_committed")
        # Gold reads the silver just written (columnar, pruned) instead of recomputing or caching it.
        silver = read_table(spark, silver_path)
        if dates.since:
            silver = silver.where(silver.event_date >= dates.since)
        if dates.until:
            silver = silver.where(silver.event_date <= dates.until)
        if dates.only is not None:
            silver = silver.where(silver.event_date.isin(sorted(dates.only)))
        silver.createOrReplaceTempView("silver_events")
        for model in GOLD_MODELS:
            progress.step(f"Building {model.name}")
            path = tables.table_path(warehouse, model.name)
            result.rows[model.name] = _write(spark, model, path, covered)
            faults.checkpoint("build.gold_committed")
        result.rows.update(_build_session_funnels(spark, warehouse, dates, progress))
        return result


# The silver columns the session funnel reads (models/session_funnel.sql), whatever the breakdown.
_FUNNEL_COLUMNS = (
    "user_session",
    "brand_norm",
    "category_root",
    "price_band",
    "event_type",
    "event_time",
    "price",
    "event_date",
)
# Lets a join or aggregate keyed by (session, ...) use rows already placed by session, instead of
# placing them again by all of its keys.
_CO_PARTITION = "spark.sql.requireAllClusterKeysForCoPartition"


def _build_session_funnels(
    spark: SparkSession, warehouse: str, dates: DateRange, progress: Progress
) -> dict[str, int]:
    """The four gold_session_funnel_daily* tables from the funnel contract's SQL, run by Spark.

    Every actor of the four funnels is a session (with a breakdown value held constant), so the
    silver rows they read are placed by session once and kept (memory, spilling to disk); each
    table's joins and aggregates over actors then run within those partitions, without moving
    rows again. Only the small per-actor rows are moved to total them per date."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from .. import funnel
    from .dialect import to_spark

    low, high, replace = funnel.rebuild_plan(warehouse, dates)
    silver = read_table(spark, tables.table_path(warehouse, tables.SILVER)).select(*_FUNNEL_COLUMNS)
    if high is not None:
        # The latest date any of the four reads: a step up to one window after the last entry.
        last = high + timedelta(days=funnel.FunnelSpec().window_days)
        silver = silver.where(F.col("event_date") <= F.lit(last))
    parts = int(spark.conf.get("spark.sql.shuffle.partitions") or 8)
    placed = silver.repartition(parts, "user_session").persist(StorageLevel.MEMORY_AND_DISK)
    previous = spark.conf.get(_CO_PARTITION, None)
    written: dict[str, int] = {}
    try:
        spark.conf.set(_CO_PARTITION, "false")
        placed.createOrReplaceTempView("silver_events")
        for name, by in funnel.GOLD_FUNNELS.items():
            progress.step(f"Building {name}")
            frame = spark.sql(to_spark(funnel.gold_sql(by, low, high)))
            covered = None if replace is None else tables.Partitions(funnel.GOLD_PARTITION, replace)
            written[name] = write_delta(
                frame, tables.table_path(warehouse, name), funnel.GOLD_PARTITION, covered
            )
    finally:
        if previous is None:
            spark.conf.unset(_CO_PARTITION)
        else:
            spark.conf.set(_CO_PARTITION, previous)
        spark.catalog.dropTempView("silver_events")
        placed.unpersist()
    return written


def _write(spark: SparkSession, model: Model, path: str, covered: frozenset[str] | None) -> int:
    """Write one model's result, replacing the covered date partitions (all when None)."""
    frame = spark.sql(to_spark_sql(model))
    replace = None if covered is None else tables.Partitions(model.partition_by, covered)
    if has_delta(spark):
        column = model.partition_by
        writer = frame.repartition(column).write.partitionBy(column).mode("overwrite")
        if covered is not None:
            days = ", ".join(f"DATE'{d}'" for d in sorted(covered)) or "NULL"
            writer = writer.option("replaceWhere", f"{column} IN ({days})")
        writer.format("delta").save(path)
        return int(tables.dataset(path).count_rows())
    return write_delta(frame, path, model.partition_by, replace)
