"""The scale-out engine: the same SQL models, transpiled to Spark SQL with SQLGlot, run by Spark.

Bronze is read from whatever the warehouse holds (a Delta table's current files, or plain
partitioned Parquet). Results are written as Delta when the delta-spark jars are on Spark's
classpath, otherwise as partitioned Parquet (every reader in the project accepts both).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

from .. import tables
from ..console import Progress
from ..errors import MissingDependencyError, WarehouseError
from .base import GOLD_MODELS, SILVER_MODEL, BuildResult, DateRange, Model

log = logging.getLogger(__name__)


def to_spark_sql(model: Model) -> str:
    """The model's DuckDB SQL in Spark's dialect (one source of truth for both engines)."""
    import sqlglot

    return sqlglot.transpile(model.sql, read="duckdb", write="spark")[0]


def spark_session(
    master: str | None = "local[*]", shuffle_partitions: int = 8, app: str = "funnelpulse"
) -> Any:
    """A UTC, ANSI-mode session with few shuffle partitions (the active one under spark-submit)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise MissingDependencyError("pyspark", "spark") from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    builder = SparkSession.builder.appName(app)
    if active is None and master:
        builder = builder.master(master)
    session = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def has_delta(spark: Any) -> bool:
    try:
        spark.sparkContext._jvm.java.lang.Class.forName("io.delta.sql.DeltaSparkSessionExtension")
        return "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions", "")
    except Exception:
        return False


def read_table(spark: Any, path: str) -> Any:
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

    def __init__(self, master: str | None = "local[*]", shuffle_partitions: int = 8) -> None:
        self.master = master
        self.shuffle_partitions = shuffle_partitions

    def build(self, warehouse: str, dates: DateRange, progress: Progress) -> BuildResult:
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:
            raise MissingDependencyError("pyspark", "spark") from exc

        ours = SparkSession.getActiveSession() is None
        progress.step(
            f"Starting Spark ({self.master})" if ours else "Using the active Spark session"
        )
        spark = spark_session(self.master, self.shuffle_partitions)
        try:
            return self._build(spark, warehouse, dates, progress)
        finally:
            if ours:  # a session spark-submit or a notebook gave us is theirs to stop
                spark.stop()

    def _build(
        self, spark: Any, warehouse: str, dates: DateRange, progress: Progress
    ) -> BuildResult:
        delta = has_delta(spark)
        if not delta:
            warnings.warn(
                "delta-spark is not on Spark's classpath: writing partitioned Parquet instead of Delta",
                stacklevel=2,
            )
            for model in (SILVER_MODEL, *GOLD_MODELS):
                path = tables.table_path(warehouse, model.name)
                if tables.is_delta(path):
                    raise WarehouseError(
                        f"{path} is a Delta table and this Spark has no delta-spark jars, so it can only "
                        "write Parquet. Build into a warehouse without DuckDB-built tables, or add "
                        "delta-spark to Spark's classpath"
                    )
        bronze = read_table(spark, tables.table_path(warehouse, tables.BRONZE))
        if dates.since:
            bronze = bronze.where(bronze.event_date >= dates.since)
        if dates.until:
            bronze = bronze.where(bronze.event_date <= dates.until)
        bronze.createOrReplaceTempView("bronze_events")
        result = BuildResult(engine=self.name)
        progress.step("Building silver_events")
        silver_path = tables.table_path(warehouse, SILVER_MODEL.name)
        self._write(spark.sql(to_spark_sql(SILVER_MODEL)), silver_path, SILVER_MODEL, dates, delta)
        # Gold reads the silver just written (columnar, pruned) instead of recomputing or caching it.
        silver = read_table(spark, silver_path)
        if dates.since:
            silver = silver.where(silver.event_date >= dates.since)
        if dates.until:
            silver = silver.where(silver.event_date <= dates.until)
        silver.createOrReplaceTempView("silver_events")
        result.rows[SILVER_MODEL.name] = tables.dataset(silver_path).count_rows()
        for model in GOLD_MODELS:
            progress.step(f"Building {model.name}")
            path = tables.table_path(warehouse, model.name)
            self._write(spark.sql(to_spark_sql(model)), path, model, dates, delta)
            result.rows[model.name] = tables.dataset(path).count_rows()
        return result

    @staticmethod
    def _write(frame: Any, path: str, model: Model, dates: DateRange, delta: bool) -> None:
        column = model.partition_by
        writer = frame.repartition(column).write.partitionBy(column).mode("overwrite")
        if delta:
            if not dates.is_all:
                low = dates.since.isoformat() if dates.since else "0001-01-01"
                high = dates.until.isoformat() if dates.until else "9999-12-31"
                writer = writer.option("replaceWhere", f"{column} BETWEEN '{low}' AND '{high}'")
            writer.format("delta").save(path)
            return
        # Parquet: a date range replaces only the date partitions it writes.
        mode = "static" if dates.is_all else "dynamic"
        writer.option("partitionOverwriteMode", mode).parquet(path)
