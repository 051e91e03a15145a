"""`funnelpulse stream`: Spark Structured Streaming from Kafka or a folder into live Delta gold.

Three queries read the source, and all judge each event with the ingest step's own typing rules
(`spark_typed_sql`), so the stream accepts and rejects exactly what a batch ingest does. One
applies the silver rules, drops duplicates within the watermark and keeps 1-hour windows per brand
(update mode), MERGEing each changed window into `gold_stream_funnel_hourly_brand` (and, with
alerts on, scores the windows that became final). The second applies the same rules and hands
each batch's new events to the embedded engine's bucket code (`streaming.buckets`), which adds
them to the live buckets of `gold_stream_funnel_buckets` (and, with alerts on, scores the open
window). The third sends malformed events to quarantine. Each commits a micro-batch to Delta with
the batch id as a Delta transaction version, so a retried batch (after a crash or kill -9)
changes nothing; Spark's checkpoint holds the source offsets and the dedup/aggregation state.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import tables
from ..config import Settings
from ..contract import QUARANTINE_SCHEMA, RAW_COLUMNS, STREAM_SCHEMA, price_band_sql
from ..errors import FunnelPulseError
from ..streaming.buckets import SPARK_BUCKETS_APP_ID, check_bucket_minutes, update_buckets
from ..streaming.kafka_url import parse_kafka
from ..streaming.windows import (
    APP_ID,
    NOT_AN_EVENT,
    WINDOW_MATCH,
    StreamResult,
    metric_expressions,
    upsert_windows,
)
from ._typing import SparkDataFrame, SparkSession
from .spark_session import SparkConfig, explain_failure, spark_session

log = logging.getLogger(__name__)


def _source(spark: SparkSession, source: str, options: dict[str, str]) -> Any:
    """The raw stream, shaped as the ingest step's typing rules read it: source, ordinal (the Kafka
    offset), reader_reason, raw_text (the message as received) and the nine raw fields as text."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    raw_schema = StructType([StructField(c, StringType()) for c in RAW_COLUMNS])
    if source.startswith("kafka://"):
        address = parse_kafka(source)
        from .spark_kafka_source import KafkaDataSource

        spark.dataSource.register(KafkaDataSource)
        stream = (
            spark.readStream.format("funnelpulse_kafka")
            .option("bootstrap", address.bootstrap)
            .option("topic", address.topic)
            .option("maxOffsetsPerTrigger", options.get("max_rows", "500000"))
            .option("brokerTimeoutSeconds", options.get("broker_timeout_s", "60"))
            .option("kafkaOptions", options.get("kafka_options", "{}"))
            .load()
        )
        parsed = F.from_json(F.col("value"), raw_schema, {"mode": "PERMISSIVE"})
        fields = stream.select(
            F.concat(F.col("topic"), F.lit(":"), F.col("partition").cast("string")).alias("source"),
            F.col("offset").alias("ordinal"),
            F.col("value").alias("raw_text"),
            parsed.alias("e"),
        ).select("source", "ordinal", "raw_text", *[F.col(f"e.{c}").alias(c) for c in RAW_COLUMNS])
        return fields.withColumn(
            "reader_reason",
            F.when(
                F.col("raw_text").isNull() | F.coalesce(*[F.col(c) for c in RAW_COLUMNS]).isNull(),
                F.lit(NOT_AN_EVENT),
            ),
        )
    if source.startswith("files://"):
        folder = source[len("files://") :]
        if not Path(folder).is_dir():
            raise FunnelPulseError(
                f"{folder}: no such folder. Give files://DIR with CSV, JSON lines or Parquet files"
            )
        kind = options.get("format") or _guess_format(Path(folder))
        reader = spark.readStream.schema(raw_schema).option(
            "maxFilesPerTrigger", options.get("max_files", "10")
        )
        if kind == "csv":
            stream = reader.option("header", "true").option("mode", "PERMISSIVE").csv(folder)
        elif kind == "json":
            stream = reader.json(folder)
        else:
            stream = reader.parquet(folder)
        return stream.select(
            F.col("_metadata.file_path").alias("source"),
            F.lit(None).cast("long").alias("ordinal"),
            F.lit(None).cast("string").alias("reader_reason"),
            F.to_json(F.struct(*RAW_COLUMNS)).alias("raw_text"),
            *RAW_COLUMNS,
        )
    raise FunnelPulseError(f"Unknown source {source!r}. Use kafka://HOST:PORT/TOPIC or files://DIR")


def _guess_format(folder: Path) -> str:
    names = [p.name.lower() for p in folder.iterdir() if p.is_file()]
    for kind, ends in (
        ("parquet", (".parquet",)),
        ("json", (".json", ".jsonl", ".ndjson")),
        ("csv", (".csv",)),
    ):
        if any(n.endswith(ends) for n in names):
            return kind
    return "csv"


class _Sink:
    """foreachBatch targets: idempotent per batch id through Delta transaction versions."""

    def __init__(
        self, warehouse: str, settings: Settings, alert_sinks: list[str] | None = None
    ) -> None:
        self.warehouse = warehouse
        self.settings = settings
        self.live = tables.table_path(warehouse, tables.GOLD_STREAM)
        self.quarantine = tables.table_path(warehouse, tables.QUARANTINE)
        self.watermark = timedelta(seconds=settings.watermark_s)
        self.quarantined = 0
        self.alert_sinks = alert_sinks
        self.alerts_checked = False
        self.alerts_sent = 0
        self.alerts_failed = 0
        self.bucket_minutes = check_bucket_minutes(settings.live_bucket_minutes)
        self.latest_event: datetime | None = None
        # The windows and the buckets queries call back on their own threads; their alerts go
        # through one journal, so they take turns (an incident must not be sent by both).
        self.alerting = threading.Lock()
        self.open_window: Any = None
        if alert_sinks:
            from ..streaming.live_hook import OpenWindowHook

            self.open_window = OpenWindowHook(
                warehouse, settings, alert_sinks, StreamResult(), self.bucket_minutes
            )

    def alert(self) -> None:
        """Alert on incidents in the final windows (a failure is logged; the stream goes on)."""
        from ..anomaly.live import alert_for_stream

        self.alerts_checked = True
        with self.alerting:
            sent, failed = alert_for_stream(self.warehouse, self.settings, self.alert_sinks)
        self.alerts_sent += sent
        self.alerts_failed += failed

    @staticmethod
    def _done(path: str, app_id: str, batch_id: int) -> bool:
        from deltalake import DeltaTable

        if not tables.is_delta(path):
            return False
        version = DeltaTable(path).transaction_version(app_id)
        return version is not None and version >= batch_id

    @staticmethod
    def _commit(app_id: str, batch_id: int) -> Any:
        from deltalake import CommitProperties, Transaction

        return CommitProperties(app_transactions=[Transaction(app_id=app_id, version=batch_id)])

    def windows(self, frame: SparkDataFrame, batch_id: int) -> None:
        from deltalake import DeltaTable

        app_id = f"{APP_ID}-windows"
        if self._done(self.live, app_id, batch_id):
            log.info("batch %d already committed to %s; skipped", batch_id, tables.GOLD_STREAM)
            return
        clock = time.perf_counter()
        data = frame.toArrow()
        collected = time.perf_counter() - clock
        now = datetime.now(UTC)
        if data.num_rows:
            start = data.column("window_start").cast(pa.timestamp("us", "UTC"))
            views, carts, purchases = (
                data.column(c).cast(pa.int64()) for c in ("views", "carts", "purchases")
            )

            def rate(num: pa.ChunkedArray, den: pa.ChunkedArray) -> pa.Array:
                return pc.if_else(
                    pc.greater(den, 0),
                    pc.divide(num.cast(pa.float64()), den.cast(pa.float64())),
                    None,
                )

            data = pa.table(
                {
                    "brand": data.column("brand"),
                    "views": views,
                    "carts": carts,
                    "purchases": purchases,
                    "revenue": data.column("revenue").cast(pa.float64()),
                    "window_start": start,
                    "window_end": pc.add(start, pa.scalar(timedelta(hours=1), pa.duration("us"))),
                    "view_to_cart_rate": rate(carts, views),
                    "cart_to_purchase_rate": rate(purchases, carts),
                    "conversion_rate": rate(purchases, views),
                    "window_date": start.cast(pa.date32()),
                    "is_final": pa.array([False] * data.num_rows),
                    "last_event_at": data.column("last_event_at").cast(pa.timestamp("us", "UTC")),
                    "updated_at": pa.array([now] * data.num_rows, pa.timestamp("us", "UTC")),
                },
                schema=STREAM_SCHEMA,
            )
        if not tables.is_delta(self.live):
            Path(self.live).mkdir(parents=True, exist_ok=True)
            DeltaTable.create(self.live, STREAM_SCHEMA, partition_by=["window_date"])
        table = DeltaTable(self.live)
        commit = self._commit(app_id, batch_id)
        if data.num_rows:
            upsert_windows(table, data, commit)
        else:
            table.update(
                predicate="false", updates={"is_final": "is_final"}, commit_properties=commit
            )
        merged = time.perf_counter() - clock - collected
        # Windows whose end the watermark (latest event time - delay) has passed are final.
        current = tables.read(self.live).select(
            ["brand", "window_start", "window_end", "is_final", "last_event_at"]
        )
        latest = pc.max(current.column("last_event_at")).as_py()
        if latest is None:
            return
        cutoff = pa.scalar(latest - self.watermark, pa.timestamp("us", "UTC"))
        ripe = current.filter(
            pc.and_(
                pc.invert(current.column("is_final")),
                pc.less_equal(current.column("window_end"), cutoff),
            )
        )
        if ripe.num_rows:
            (
                DeltaTable(self.live)
                .merge(
                    ripe.select(["brand", "window_start"]),
                    predicate=WINDOW_MATCH,
                    source_alias="s",
                    target_alias="t",
                )
                .when_matched_update({"is_final": "true"})
                .execute()
            )
        log.info(
            "batch %d: %d windows computed in %.2f s, merged in %.2f s, finalised %d in %.2f s",
            batch_id,
            data.num_rows,
            collected,
            merged,
            ripe.num_rows,
            time.perf_counter() - clock - collected - merged,
        )
        # The first batch of a run also checks: it sends what a crash kept from being sent.
        if self.alert_sinks and (ripe.num_rows or not self.alerts_checked):
            self.alert()

    def buckets(self, frame: SparkDataFrame, batch_id: int) -> None:
        """Add the batch's new events to the live buckets with the embedded engine's code
        (skipped when this batch id was merged before), then, with alerts on, score the open
        window as the embedded engine does after each batch."""
        data = frame.toArrow()
        if data.num_rows:
            # UTC wall time, as the embedded engine hands its events over
            times = data.column("event_time").cast(pa.timestamp("us", "UTC"))
            data = data.set_column(
                data.schema.get_field_index("event_time"),
                "event_time",
                times.cast(pa.timestamp("us")),
            )
            clock = time.perf_counter()
            rows = update_buckets(
                self.warehouse, data, batch_id, self.bucket_minutes, SPARK_BUCKETS_APP_ID
            )
            log.info(
                "buckets batch %d: %d events, %d bucket rows merged in %.2f s%s",
                batch_id,
                data.num_rows,
                rows,
                time.perf_counter() - clock,
                "" if rows else " (merged before: skipped)",
            )
            newest = pc.max(times).as_py()
            if self.latest_event is None or newest > self.latest_event:
                self.latest_event = newest
        if self.open_window is not None and self.latest_event is not None:
            with self.alerting:
                self.open_window.after_commit(self.latest_event)

    def bad_rows(self, frame: SparkDataFrame, batch_id: int) -> None:
        app_id = f"{APP_ID}-quarantine"
        data = frame.toArrow()
        if data.num_rows == 0 or self._done(self.quarantine, app_id, batch_id):
            return
        from deltalake import write_deltalake

        now = datetime.now(UTC)
        rows = pa.table(
            {
                "source_file": data.column("source"),
                "line_number": data.column("ordinal").cast(pa.int64()),
                "raw_line": data.column("raw_line"),
                "reason": data.column("reason"),
                "ingest_id": pa.array([f"stream-batch-{batch_id}"] * data.num_rows),
                "ingested_at": pa.array([now] * data.num_rows, pa.timestamp("us", "UTC")),
            },
            schema=QUARANTINE_SCHEMA,
        )
        write_deltalake(
            self.quarantine, rows, mode="append", commit_properties=self._commit(app_id, batch_id)
        )
        self.quarantined += rows.num_rows


def run_stream(
    warehouse: str,
    settings: Settings,
    source: str,
    *,
    until_idle_s: float | None = None,
    trigger_s: float = 2.0,
    checkpoint: str | None = None,
    options: dict[str, str] | None = None,
    on_batch: Any = None,
    alert_sinks: list[str] | None = None,
    kafka_options: dict[str, str] | None = None,
) -> StreamResult:
    """Run until Ctrl-C/SIGTERM, or until no new input arrived for `until_idle_s` seconds.

    With `alert_sinks`, newly final windows are scored and incidents alerted to those sinks;
    `kafka_options` are the user's librdkafka options (secrets stay in the environment)."""
    import json

    from ..streaming.kafka_client import file_options

    options = {
        **(options or {}),
        "kafka_options": json.dumps(file_options(kafka_options or {})),
        "max_future_s": str(settings.max_future_s),
    }
    _refuse_embedded_table(
        tables.table_path(warehouse, tables.GOLD_STREAM),
        tables.table_path(warehouse, tables.GOLD_STREAM_BUCKETS),
    )
    checkpoint = checkpoint or str(Path(warehouse, "_checkpoints", "stream"))
    from pyspark.sql import SparkSession

    ours = SparkSession.getActiveSession() is None  # a notebook's or spark-submit's stays running
    spark = spark_session(app="funnelpulse-stream", config=SparkConfig.from_settings(settings))
    try:
        return _run(
            spark,
            ours,
            warehouse,
            settings,
            source,
            until_idle_s,
            trigger_s,
            checkpoint,
            options,
            on_batch,
            alert_sinks,
        )
    except FunnelPulseError:
        raise
    except Exception as exc:
        failure = explain_failure(spark, exc)
        if failure is None:
            raise
        raise failure from exc


def _run(
    spark: SparkSession,
    ours: bool,
    warehouse: str,
    settings: Settings,
    source: str,
    until_idle_s: float | None,
    trigger_s: float,
    checkpoint: str,
    options: dict[str, str],
    on_batch: Any,
    alert_sinks: list[str] | None,
) -> StreamResult:
    """The stream's queries on `spark`, supervised until they stop."""
    from pyspark.sql import functions as F

    # Few state partitions: every stateful operator runs one task per partition on each trigger,
    # and on 2 cores 8 partitions x 2 operators cost seconds per (even empty) batch. Fixed for the
    # life of a checkpoint.
    spark.conf.set("spark.sql.shuffle.partitions", options.get("state_partitions", "2"))
    sink = _Sink(warehouse, settings, alert_sinks)
    metrics = metric_expressions()
    good = (
        _fresh(spark, source, options, settings)
        .groupBy(F.window("event_time", "1 hour").alias("w"), F.col("brand_norm").alias("brand"))
        .agg(
            *[F.expr(sql).alias(name) for name, sql in metrics.items()],
            F.max("event_time").alias("last_event_at"),
        )
        .select(
            "brand",
            F.col("w.start").alias("window_start"),
            "views",
            "carts",
            "purchases",
            "revenue",
            "last_event_at",
        )
    )

    def start(writer: Any, batch: Any, every_s: float, name: str) -> Any:
        """Start one foreachBatch query with its own checkpoint subfolder `name`."""
        return (
            writer.foreachBatch(batch)
            .trigger(processingTime=f"{every_s} seconds")
            .option("checkpointLocation", f"{checkpoint}/{name}")
            .queryName(f"funnelpulse_{name}")
            .start()
        )

    windows_query = start(good.writeStream.outputMode("update"), sink.windows, trigger_s, "windows")

    def buckets() -> Any:
        # The live buckets: the same judged, deduplicated events as the windows (own dedup
        # state, no aggregation state: `update_buckets` counts each batch's new events and
        # adds them, as on the embedded engine).
        events = _fresh(spark, source, options, settings).select(
            "event_time",
            "event_type",
            "brand_norm",
            F.expr(price_band_sql()).alias("price_band"),
            "price",
        )
        return start(events.writeStream, sink.buckets, trigger_s, "buckets")

    def quarantine() -> Any:
        # On few cores this competes with the live tables, so it runs less often (nothing
        # waits on it, and it still drains fully).
        bad = (
            _typed(spark, source, options)
            .where("reason IS NOT NULL")
            .select("source", "ordinal", "raw_line", "reason")
        )
        return start(bad.writeStream, sink.bad_rows, max(5.0, 5 * trigger_s), "quarantine")

    # Each query reads the source itself, with its own plan, and starts once the one before has
    # run a batch: two queries planning their first batches at the same moment (as after a
    # restart with a backlog) have failed in Spark 4 with a corrupt task
    # (java.io.OptionalDataException). A query that failed starts nothing more: its error is
    # reported at once (e.g. an unreachable broker).
    queries = [windows_query]
    for begin in (buckets, quarantine):
        _first_batch(queries[-1])
        if not queries[-1].isActive:
            break
        queries.append(begin())
    watch = None
    if alert_sinks:  # no event for no_data_minutes of wall clock: one no-data incident
        from ..anomaly.no_data import NoDataWatch

        watch = NoDataWatch(warehouse, settings, alert_sinks)
    result = _supervise(
        spark, queries, until_idle_s, on_batch, stop_spark=ours, watch=watch, lock=sink.alerting
    )
    result.quarantined = sink.quarantined
    result.alerts_sent, result.alerts_failed = sink.alerts_sent, sink.alerts_failed
    if sink.open_window is not None:
        result.alerts_sent += sink.open_window.result.alerts_sent
        result.alerts_failed += sink.open_window.result.alerts_failed
    if tables.is_delta(sink.live):
        result.windows = tables.dataset(sink.live).count_rows()
    return result


def _refuse_embedded_table(live: str, buckets: str | None = None) -> None:
    """The engines keep their positions apart: one must not add to windows or buckets the other
    counted."""
    from deltalake import DeltaTable

    from ..streaming.buckets import BUCKETS_APP_ID

    for path, name, app_id in (
        (live, tables.GOLD_STREAM, "funnelpulse-embedded-windows"),
        (buckets, tables.GOLD_STREAM_BUCKETS, BUCKETS_APP_ID),
    ):
        if (
            path
            and tables.is_delta(path)
            and DeltaTable(path).transaction_version(app_id) is not None
        ):
            raise FunnelPulseError(
                f"{name} was written by the embedded engine. Run the stream without "
                "--engine spark, or delete the table to start it over on Spark"
            )


def _fresh(spark: SparkSession, source: str, options: dict[str, str], settings: Settings) -> Any:
    """The source's good events under the silver rules, each repeat within the watermark dropped
    (events behind the watermark too): what the live windows and the buckets count."""
    from pyspark.sql import functions as F

    key = ["event_time", "user_id", "user_session", "product_id", "event_type"]
    return (
        _typed(spark, source, options)
        .where("reason IS NULL AND price IS NOT NULL AND price > 0")
        .select(
            F.col("event_time").cast("timestamp").alias("event_time"),
            "event_type",
            "product_id",
            "user_id",
            "user_session",
            "price",
            F.expr("nullif(trim(lower(brand)), '')").alias("brand_norm"),
        )
        .withWatermark("event_time", f"{settings.watermark_s} seconds")
        .dropDuplicatesWithinWatermark(key)
    )


def _typed(spark: SparkSession, source: str, options: dict[str, str]) -> Any:
    """The source judged by the ingest step's typing rules: typed columns, `reason` (NULL for a
    good event; events more than max_future_s ahead of each batch's clock are quarantined),
    `raw_line` and `source`."""
    from .spark_ingest import spark_typed_sql

    _source(spark, source, options).createOrReplaceTempView("raw")
    ahead_s = int(options.get("max_future_s", "3600"))
    return spark.sql(spark_typed_sql(("source",), ahead_s=ahead_s))


def _first_batch(query: Any, poll_s: float = 0.2) -> None:
    """Wait until `query` has finished a batch, or has stopped (its error is reported later)."""
    while query.isActive and not query.recentProgress and query.exception() is None:
        time.sleep(poll_s)


def _cause(text: str) -> str:
    """The Python exception line inside a Spark/Py4J error, else the Java root cause, else its
    first line."""
    import re

    found = re.findall(r"^\s*(?:\w+\.)*(\w+(?:Error|Exception): .+)$", text, flags=re.M)
    python = [f for f in found if not f.startswith(("Py4J", "StreamingQueryException"))]
    if python:
        return python[-1][:500]
    java = re.findall(r"^Caused by: (\S+(?:: .*)?)$", text, flags=re.M)
    return (java[-1] if java else text.strip().splitlines()[0])[:500]


def _idle(status: dict[str, Any]) -> bool:
    """A query waiting for its next trigger or asking the source for new data, with none found.
    (Asking can take a second or more on a busy machine: with three queries reading one source
    some query is nearly always asking, so "no trigger active" would never hold for all.)"""
    message = str(status.get("message", ""))
    return not status["isDataAvailable"] and (
        not status["isTriggerActive"] or message.startswith("Getting offsets")
    )


def _supervise(
    spark: SparkSession,
    queries: list[Any],
    until_idle_s: float | None,
    on_batch: Any,
    stop_spark: bool = True,
    watch: Any = None,
    lock: Any = None,
) -> StreamResult:
    """Follow the queries' progress every half second until they stop. With `watch` (a
    NoDataWatch), the windows query's input drives the no-data incident on the driver: a batch
    with messages is an arrival, every other turn a tick; `lock` keeps it apart from the
    queries' own alerting."""
    result = StreamResult()
    started = time.time()
    last_input = time.time()
    # query -> (newest batch id reported, whether that report had input). An idle trigger reports
    # the id of the batch it would run next with no rows; when data comes, that batch reports
    # again under the same id, with its rows: counted then, not skipped as seen.
    seen: dict[str, tuple[int, bool]] = {}
    stopping = {"flag": False}

    def stop(*_: Any) -> None:
        stopping["flag"] = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping["flag"]:
            time.sleep(0.5)
            arrived = False
            for query in queries:
                error = query.exception()
                if error is not None:
                    log.debug("stream failure: %s", error)
                    raise FunnelPulseError(f"The stream stopped: {_cause(str(error))}")
                for progress in query.recentProgress:
                    batch = progress["batchId"]
                    rows = int(progress.get("numInputRows", 0))
                    last, had_rows = seen.get(query.name, (-1, False))
                    if batch < last or (batch == last and (had_rows or not rows)):
                        continue
                    seen[query.name] = (batch, rows > 0)
                    late = sum(
                        int(op.get("numRowsDroppedByWatermark", 0))
                        for op in progress.get("stateOperators", [])
                    )
                    if query.name == "funnelpulse_windows":
                        result.batches += batch > last
                        result.input_rows += rows
                        result.late_rows_dropped += late
                        arrived = arrived or rows > 0
                    if rows or batch == 0:  # idle time counts from the first batch or the last data
                        last_input = time.time()
                    took_s = int(progress.get("durationMs", {}).get("triggerExecution", 0)) / 1000
                    line = (
                        f"{query.name} batch {batch}: {rows:,} rows in {took_s:.2f} s, {late:,} late rows "
                        f"dropped by the watermark {progress.get('eventTime', {}).get('watermark', '-')}"
                    )
                    log.info(line)
                    result.log.append(line)
                    if on_batch:
                        on_batch(line)
            if watch is not None:
                with lock or contextlib.nullcontext():
                    if arrived:
                        watch.arrived()
                    else:
                        watch.tick()
            idle = all(_idle(q.status) for q in queries)
            if until_idle_s is not None and idle and time.time() - last_input >= until_idle_s:
                break
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for query in queries:
            query.stop()
        if stop_spark:
            spark.stop()
    result.seconds = time.time() - started
    return result
