"""`funnelpulse stream` on the embedded engine: micro-batches judged and counted by DuckDB with
the batch pipeline's own SQL, windows MERGEd into the live Delta table, exactly once.

Each batch is planned (its input recorded in the state file), its bad rows committed to
quarantine, its event keys recorded in the state, and then one MERGE commits the changed and the
newly final windows together with the batch number (a Delta transaction version) and the source
position (Kafka offsets or files read) in the commit's metadata. A restart reads that commit,
rolls the state back to it and retries the next batch from its plan: whatever moment a kill -9
hits, the tables end as if the run had never stopped.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import tables
from ..config import Settings
from ..contract import QUARANTINE_SCHEMA, STREAM_SCHEMA
from ..errors import FunnelPulseError
from ..faults import checkpoint
from ..ingest import LATE_REASON, not_after
from ..localdb import connect
from ..running import Registration
from .live_hook import OpenWindowHook
from .maintenance import Maintenance, table_config
from .repair import check_live_tables, missing_file_error, start_over
from .sources import Batch, Bounds, FileSource, KafkaSource
from .state import StreamState
from .status import StatusFile
from .windows import WINDOW_MATCH, StreamResult, metric_expressions, silver_sql, upsert_windows

log = logging.getLogger(__name__)

APP_ID = "funnelpulse-embedded"  # Delta transaction app ids: {APP_ID}-windows, -quarantine
META_KEY = "funnelpulse.stream"
SPARK_APP_ID = "funnelpulse-stream-windows"
MEMORY_LIMIT = "1GB"
# Longest wait for a batch's input: 0.25 s kept p95 send-to-visible under 2 s at 50,000 events/s
# (0.5 s gave 2.28 s) and still drains a backlog at ~104,000 events/s (BENCHMARKS.md).
DEFAULT_TRIGGER_S = 0.25
BOUNDS = ("latest", "earliest")  # the event-time bounds of a batch, as its plan records them
# The batch's counted events with the file each came from (the first copy, as silver keeps it).
_FILE_EVENTS = """CREATE OR REPLACE TEMP TABLE fresh_by_file AS
    SELECT b.name, f.event_time, hash(f.user_id, f.user_session, f.product_id, f.event_type) AS k,
        f.event_type, f.brand_norm, f.price_band, f.price
    FROM fresh AS f JOIN (
        SELECT event_time, user_id, user_session, product_id, event_type,
            min(source_file) AS name
        FROM bronze_events GROUP BY ALL
    ) AS b ON f.event_time = b.event_time AND f.event_type = b.event_type
        AND f.user_id IS NOT DISTINCT FROM b.user_id
        AND f.user_session IS NOT DISTINCT FROM b.user_session
        AND f.product_id IS NOT DISTINCT FROM b.product_id"""
_BRONZE_VIEW = """CREATE OR REPLACE TEMP VIEW bronze_events AS SELECT event_time, event_type,
    product_id, category_id, category_code, brand, price, user_id, user_session, event_date,
    source AS source_file, ordinal AS source_row FROM typed_in"""


def committed(live: str) -> tuple[int, dict[str, Any]]:
    """The last batch committed to the live table and its metadata (-1, {} for none)."""
    from deltalake import DeltaTable

    if not tables.is_delta(live):
        return -1, {}
    table = DeltaTable(live)
    batch = table.transaction_version(f"{APP_ID}-windows")
    if batch is None:
        if table.transaction_version(SPARK_APP_ID) is not None:
            raise FunnelPulseError(
                f"{tables.GOLD_STREAM} was written by the Spark engine. Run the stream with "
                "--engine spark, or delete the table to start it over on the embedded engine"
            )
        return -1, {}
    for entry in table.history(200):
        meta = entry.get(META_KEY)
        if meta:
            found = json.loads(meta)
            if found.get("batch") == batch:
                return batch, found
    raise FunnelPulseError(
        f"{tables.GOLD_STREAM}: the position of batch {batch} is missing from its history. "
        "Delete the table and its checkpoint folder to start the stream over"
    )


class EmbeddedStream:
    """One run of the embedded engine over one source into one warehouse."""

    def __init__(
        self,
        warehouse: str,
        settings: Settings,
        source_url: str,
        checkpoint_dir: str,
        kafka_options: dict[str, str],
        broker_timeout_s: float,
        alert_sinks: list[str] | None,
    ) -> None:
        self.warehouse = warehouse
        self.settings = settings
        self.live = tables.table_path(warehouse, tables.GOLD_STREAM)
        self.quarantine = tables.table_path(warehouse, tables.QUARANTINE)
        self.watermark = timedelta(seconds=settings.watermark_s)
        self.alert_sinks = alert_sinks
        self.con = connect()
        self._table: Any = None  # the live table, loaded at the first commit
        # Bounded memory: DuckDB would otherwise keep up to 80% of RAM as cache over a long run.
        spill = Path(checkpoint_dir, "spill")
        self.con.execute(f"SET memory_limit='{MEMORY_LIMIT}'").fetchall()
        self.con.execute("SET temp_directory = ?", [str(spill)]).fetchall()
        self.state = StreamState(self.con, str(Path(checkpoint_dir, "state.duckdb")))
        self.batch, meta = committed(self.live)
        self.state.rollback(self.batch)
        # Event-time watermark (naive UTC): events before it are late, windows ending by it are
        # final. It follows the slowest partition that is not caught up, so one partition read
        # ahead of another makes nothing late; it never moves back.
        mark = meta.get("watermark")
        self.wm: datetime | None = datetime.fromisoformat(mark) if mark else None
        self.part_max = {
            k: datetime.fromisoformat(v) for k, v in meta.get("partition_max", {}).items()
        }
        self._load_open_windows()
        self.metrics = metric_expressions("duckdb")
        self.maintenance = Maintenance(
            [self.live, tables.table_path(warehouse, tables.GOLD_STREAM_BUCKETS)],
            retention_s=settings.stream_retention_s,
        )
        self.result = StreamResult(late_quarantined=True)
        self.alerts_checked = False
        # live buckets per batch; with --alert, the open window scored as buckets complete
        self.open_window = OpenWindowHook(warehouse, settings, alert_sinks, self.result)
        if source_url.startswith("kafka://"):
            offsets = (
                meta.get("plan", {}).get("offsets") if meta.get("source") == source_url else None
            )
            self.source: KafkaSource | FileSource = KafkaSource(
                source_url, kafka_options, offsets, broker_timeout_s, settings.on_offset_reset
            )
        elif source_url.startswith("files://"):
            self.source = FileSource(
                source_url, self.state.files_done(), settle_s=settings.settle_s
            )
        else:
            raise FunnelPulseError(
                f"Unknown source {source_url!r}. Use kafka://HOST:PORT/TOPIC or files://DIR"
            )

    def _load_open_windows(self) -> None:
        """The windows not yet final, as the live table holds them: the running totals."""
        empty = STREAM_SCHEMA.empty_table()
        current = tables.read(self.live) if tables.is_delta(self.live) else empty
        self.con.register("current_live", current)
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE open_w AS SELECT brand, window_start::TIMESTAMP AS "
            "window_start, views, carts, purchases, revenue, last_event_at::TIMESTAMP AS "
            "last_event_at FROM current_live WHERE NOT is_final"
        ).fetchall()
        self.con.unregister("current_live")

    def step(self, max_rows: int, max_wait_s: float) -> Batch | None:
        """Read, judge and commit one micro-batch; None when no input arrived."""
        number = self.batch + 1
        plan = self.state.plan(number, self.source.name)
        bounds = self._bounds(plan)
        clock = time.perf_counter()
        batch = self.source.read(self.con, max_rows, max_wait_s, plan, bounds)
        if batch.messages == 0 and plan is None:
            return None
        read_s = time.perf_counter() - clock
        if plan is None:  # a retry judges against the same bounds, whatever the clock says then
            batch.plan.update({k: v.isoformat() for k, v in zip(BOUNDS, bounds, strict=True) if v})
            self.state.save_plan(number, self.source.name, batch.plan)
        checkpoint("stream.planned")
        quarantined = self._quarantine(number, batch)
        late = int(pc.sum(pc.starts_with(batch.bad.column("reason"), LATE_REASON)).as_py() or 0)
        checkpoint("stream.quarantine_committed")
        if batch.replaced:  # the files' earlier rows: out of the state, into temp table removed
            self.state.take_out(number, batch.replaced)
        merged, ripe, dups = self._count(number, batch)
        checkpoint("stream.state_recorded")
        # before the commit: see buckets.py
        self.open_window.after_count(
            self.con, number, removed_table="removed" if batch.replaced else None
        )
        self._commit(number, merged, batch)
        checkpoint("stream.live_committed")
        self.batch = number
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE open_w AS SELECT brand, window_start, views, carts, "
            "purchases, revenue, last_event_at FROM next_open"
        ).fetchall()
        r = self.result
        r.batches += 1
        r.input_rows += batch.messages
        r.late_rows_dropped += late
        r.duplicates_dropped += dups
        r.quarantined += quarantined
        took_s = time.perf_counter() - clock
        line = (
            f"batch {number}: {batch.messages:,} events ({late:,} late, {dups:,} repeats, "
            f"{quarantined:,} quarantined), {merged.num_rows:,} windows merged, {ripe:,} final; "
            f"read {read_s:.2f} s, total {took_s:.2f} s"
        )
        log.info(line)
        r.log.append(line)
        if self.batch % 50 == 0 and self.wm is not None:
            self.state.prune(self.wm)
        self.maintenance.after_batch(self.batch)
        if self.alert_sinks and (ripe or not self.alerts_checked):
            self._alert()
        self.open_window.after_commit(max(self.part_max.values(), default=None))
        return batch

    def _bounds(self, plan: dict[str, Any] | None) -> Bounds:
        """The event times a batch accepts: up to the clock plus max_future_s, and from the
        watermark on (events outside go to quarantine with the reason); a planned batch's own."""
        if plan is not None and BOUNDS[0] in plan:
            return (
                datetime.fromisoformat(plan[BOUNDS[0]]),
                datetime.fromisoformat(plan[BOUNDS[1]]) if plan.get(BOUNDS[1]) else None,
            )
        return not_after(self.settings.max_future_s), self.wm

    def _quarantine(self, number: int, batch: Batch) -> int:
        """Append the batch's bad rows (once: a retried batch finds its version committed)."""
        from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

        rows = batch.bad.num_rows
        app_id = f"{APP_ID}-quarantine"
        if batch.replaced and tables.is_delta(self.quarantine):
            # a replaced file's earlier bad rows go (again, harmlessly, when a batch is retried)
            names = ", ".join(tables.sql_quote(n) for n in batch.replaced)
            DeltaTable(self.quarantine).delete(
                f"source_file IN ({names}) AND ingest_id <> 'stream-batch-{number}'"
            )
        if rows == 0:
            return 0
        if tables.is_delta(self.quarantine):
            done = DeltaTable(self.quarantine).transaction_version(app_id)
            if done is not None and done >= number:
                return rows
        now = datetime.now(UTC)
        data = pa.table(
            {
                **{c: batch.bad.column(c) for c in ("source_file", "line_number", "raw_line")},
                "reason": batch.bad.column("reason"),
                "ingest_id": pa.array([f"stream-batch-{number}"] * rows, pa.string()),
                "ingested_at": pa.array([now] * rows, pa.timestamp("us", "UTC")),
            }
        ).cast(QUARANTINE_SCHEMA)
        write_deltalake(
            self.quarantine,
            data,
            mode="append",
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=app_id, version=number)]
            ),
        )
        return rows

    def _count(self, number: int, batch: Batch) -> tuple[pa.Table, int, int]:
        """The silver rules, the repeat check and the window totals for one batch (late events
        were quarantined when judged): the rows to MERGE, how many windows became final, repeats
        dropped."""
        con = self.con
        con.register("typed_in", batch.typed)
        con.execute(_BRONZE_VIEW).fetchall()
        con.execute(f"CREATE OR REPLACE TEMP TABLE silver_b AS {silver_sql()}").fetchall()
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE fresh AS {self.state.new_events_sql('silver_b')}"
        ).fetchall()
        replaced = bool(batch.replaced)
        dups = con.execute(
            "SELECT (SELECT count(*) FROM silver_b) - (SELECT count(*) FROM fresh)"
        ).fetchall()[0][0]
        for part, newest in con.execute(self._newest_sql()).fetchall():
            if newest is not None and (part not in self.part_max or newest > self.part_max[part]):
                self.part_max[part] = newest
        # A partition not yet read holds the watermark back; one read to its end does not.
        behind = [self.part_max.get(p) for p in self.source.partition_keys - batch.caught_up]
        slowest = (
            (None if None in behind else min(behind))  # type: ignore[type-var]
            if behind
            else max(self.part_max.values(), default=None)
        )
        if slowest is not None and (self.wm is None or slowest - self.watermark > self.wm):
            self.wm = slowest - self.watermark
        cutoff = self.wm or datetime(1, 1, 1)
        metrics = ", ".join(f"{sql} AS {name}" for name, sql in self.metrics.items())
        totals = "SELECT date_trunc('hour', event_time) AS window_start, brand_norm AS brand"
        agg = f"{totals}, {metrics}, max(event_time) AS last_event_at FROM fresh GROUP BY ALL"
        base = "open_w"
        if replaced:  # minus the replaced files' earlier rows, which may sit in final windows
            agg = f"""SELECT window_start, brand, {", ".join(f"sum({m}) AS {m}" for m in self.metrics)},
                max(last_event_at) AS last_event_at FROM (
                    {agg}
                    UNION ALL BY NAME
                    SELECT window_start, brand, {", ".join(f"-{m} AS {m}" for m in self.metrics)}
                    FROM ({totals}, {metrics} FROM removed GROUP BY ALL)
                ) GROUP BY ALL"""
            self._final_windows()
            base = "(SELECT * FROM open_w UNION ALL BY NAME SELECT * FROM final_w)"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE changed AS
            WITH agg AS ({agg})
            SELECT a.brand, a.window_start,
                CAST(coalesce(o.views, 0) + a.views AS BIGINT) AS views,
                CAST(coalesce(o.carts, 0) + a.carts AS BIGINT) AS carts,
                CAST(coalesce(o.purchases, 0) + a.purchases AS BIGINT) AS purchases,
                coalesce(o.revenue, 0.0) + a.revenue AS revenue,
                greatest(o.last_event_at, a.last_event_at) AS last_event_at
            FROM agg AS a LEFT JOIN {base} AS o
                ON o.window_start = a.window_start AND o.brand IS NOT DISTINCT FROM a.brand"""
        ).fetchall()
        con.execute(
            """CREATE OR REPLACE TEMP TABLE all_w AS
            SELECT *, true AS touched FROM changed
            UNION ALL BY NAME
            SELECT o.*, false AS touched FROM open_w AS o WHERE NOT EXISTS (
                SELECT 1 FROM changed AS c
                WHERE c.window_start = o.window_start AND c.brand IS NOT DISTINCT FROM o.brand)"""
        ).fetchall()
        final = "window_start + INTERVAL 1 HOUR <= ?"
        merged = con.sql(
            f"""SELECT brand, views, carts, purchases, revenue, window_start,
                window_start + INTERVAL 1 HOUR AS window_end,
                carts / NULLIF(views, 0) AS view_to_cart_rate,
                purchases / NULLIF(carts, 0) AS cart_to_purchase_rate,
                purchases / NULLIF(views, 0) AS conversion_rate,
                CAST(window_start AS DATE) AS window_date, {final} AS is_final,
                last_event_at, ?::TIMESTAMP AS updated_at
            FROM all_w WHERE touched OR {final}""",
            params=[cutoff, datetime.now(UTC).replace(tzinfo=None), cutoff],
        ).to_arrow_table()
        ripe = int(sum(merged.column("is_final").to_pylist()))
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE next_open AS SELECT * FROM all_w WHERE NOT ({final})",
            [cutoff],
        ).fetchall()
        file_events = None
        if isinstance(self.source, FileSource):
            con.execute(_FILE_EVENTS).fetchall()
            file_events = "fresh_by_file"
        self.state.record(number, "fresh", batch.versions, file_events)
        con.unregister("typed_in")
        return _as_live(merged), ripe, int(dups)

    def _final_windows(self) -> None:
        """Temp table final_w: the live table's final windows (a replaced file's rows may be
        taken out of them)."""
        empty = STREAM_SCHEMA.empty_table()
        current = tables.read(self.live) if tables.is_delta(self.live) else empty
        self.con.register("current_live", current)
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE final_w AS SELECT brand, window_start::TIMESTAMP AS "
            "window_start, views, carts, purchases, revenue, last_event_at::TIMESTAMP AS "
            "last_event_at FROM current_live WHERE is_final"
        ).fetchall()
        self.con.unregister("current_live")

    def _newest_sql(self) -> str:
        """SQL: per partition, the newest event time the batch's own events vouch for. The batch's
        times, sorted, split into runs wherever two neighbours are more than half the lateness
        allowance apart; a run counts when it holds the batch's median or at least
        max(3, 1 % of the batch) events, and the newest time of a run that counts is taken. So
        fewer than 3 events (or 1 % of a big batch) far from the rest, a wrong clock, never move
        the watermark, while a batch that moved on moves it as far as its newest event."""
        key = "source_file" if isinstance(self.source, KafkaSource) else "'files'"
        gap_us = max(1_000_000, int(self.watermark.total_seconds() * 1e6) // 2)
        return f"""
            WITH b AS (
                SELECT {key} AS part, event_time,
                    lag(event_time) OVER (PARTITION BY {key} ORDER BY event_time) AS prev
                FROM bronze_events
            ),
            runs AS (
                SELECT part, event_time, sum(CASE WHEN prev IS NULL
                    OR epoch_us(event_time) - epoch_us(prev) > {gap_us} THEN 1 ELSE 0 END)
                    OVER (PARTITION BY part ORDER BY event_time ROWS UNBOUNDED PRECEDING) AS run
                FROM b
            ),
            mid AS (
                SELECT part, quantile_disc(event_time, 0.5) AS t, count(*) AS n FROM b
                GROUP BY part
            ),
            median_run AS (
                SELECT DISTINCT r.part, r.run FROM runs AS r
                JOIN mid AS m ON r.part = m.part AND r.event_time = m.t
            ),
            sizes AS (
                SELECT part, run, count(*) AS n, max(event_time) AS newest FROM runs
                GROUP BY part, run
            )
            SELECT s.part, max(s.newest) FROM sizes AS s
            JOIN mid AS m ON s.part = m.part
            LEFT JOIN median_run AS k ON s.part = k.part AND s.run = k.run
            WHERE k.run IS NOT NULL OR s.n >= greatest(3, ceil(m.n / 100.0))
            GROUP BY s.part"""

    def _commit(self, number: int, merged: pa.Table, batch: Batch) -> None:
        """One commit: the changed windows, the batch number and the source position."""
        from deltalake import CommitProperties, DeltaTable, Transaction

        if not tables.is_delta(self.live):
            Path(self.live).mkdir(parents=True, exist_ok=True)
            DeltaTable.create(
                self.live,
                STREAM_SCHEMA,
                partition_by=["window_date"],
                configuration=table_config(self.settings.stream_retention_s),
            )
        meta = {
            "batch": number,
            "source": self.source.name,
            "plan": batch.plan if not batch.files else {},
            "watermark": self.wm.isoformat() if self.wm else None,
            "partition_max": {k: v.isoformat() for k, v in self.part_max.items()},
        }
        commit = CommitProperties(
            custom_metadata={META_KEY: json.dumps(meta)},
            app_transactions=[Transaction(app_id=f"{APP_ID}-windows", version=number)],
        )
        if self._table is None:
            self._table = DeltaTable(self.live)
        else:  # brought up to date: ~1 ms where a fresh load costs ~20 ms a batch
            self._table.update_incremental()
        table = self._table
        if merged.num_rows:  # the window_date term prunes the table's partitions
            upsert_windows(
                table, merged, commit, f"t.window_date = s.window_date AND {WINDOW_MATCH}"
            )
        else:  # nothing changed, but the position moved: commit it (an empty append)
            from deltalake import write_deltalake

            write_deltalake(table, merged, mode="append", commit_properties=commit)

    def _alert(self) -> None:
        """Alert on incidents in final windows (a failure is logged; the stream goes on)."""
        from ..anomaly.live import alert_for_stream

        self.alerts_checked = True
        sent, failed = alert_for_stream(self.warehouse, self.settings, self.alert_sinks)
        self.result.alerts_sent += sent
        self.result.alerts_failed += failed

    def close(self) -> None:
        if isinstance(self.source, KafkaSource):
            self.source.close()
        self.con.close()


def _as_live(merged: pa.Table) -> pa.Table:
    """DuckDB's naive UTC timestamps as the live table's UTC-aware columns."""
    columns = {}
    for f in STREAM_SCHEMA:
        column = merged.column(f.name)
        if pa.types.is_timestamp(f.type):
            column = column.cast(pa.timestamp("us")).cast(f.type)
        columns[f.name] = column.cast(f.type)
    return pa.table(columns, schema=STREAM_SCHEMA)


def run_embedded(
    warehouse: str,
    settings: Settings,
    source: str,
    *,
    until_idle_s: float | None = None,
    trigger_s: float = DEFAULT_TRIGGER_S,
    checkpoint_dir: str | None = None,
    max_rows: int = 500_000,
    broker_timeout_s: float = 60.0,
    kafka_options: dict[str, str] | None = None,
    on_batch: Any = None,
    alert_sinks: list[str] | None = None,
    repair: bool = False,
) -> StreamResult:
    """Run until Ctrl-C/SIGTERM (the batch in flight is committed first), or until no input
    arrived for `until_idle_s` seconds. `repair` first starts the live tables over (repair.py)."""
    if "://" in warehouse and checkpoint_dir is None:
        raise FunnelPulseError(
            "The embedded stream keeps its state on local disk. Give --checkpoint LOCAL_DIR"
        )
    checkpoint_dir = checkpoint_dir or str(Path(warehouse, "_checkpoints", "stream-embedded"))
    if repair:
        start_over(warehouse, checkpoint_dir, f"{APP_ID}-quarantine")
    check_live_tables(warehouse, source)
    stopping = {"flag": False}

    def stop(*_: Any) -> None:
        stopping["flag"] = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.time()
    run = None
    # A heartbeat naming the files each step may read or write, so vacuum keeps them.
    beat = Registration(warehouse, "stream").start()
    try:
        with beat.busy():
            run = EmbeddedStream(
                warehouse,
                settings,
                source,
                checkpoint_dir,
                kafka_options or {},
                broker_timeout_s,
                alert_sinks,
            )
        last_input = time.monotonic()
        status = StatusFile(checkpoint_dir)
        watch = None
        if alert_sinks:  # the alerting parts load only when alerting (start-up time)
            from ..anomaly.no_data import NoDataWatch

            watch = NoDataWatch(warehouse, settings, alert_sinks)
        while not stopping["flag"]:
            wait_s = trigger_s
            idle_s = time.monotonic() - last_input
            if until_idle_s is not None and not run.source.pending and idle_s >= trigger_s:
                # a whole wait found nothing already: wait no longer than the idle limit needs,
                # so the run stops when it is reached, not up to one wait later
                wait_s = max(0.01, min(trigger_s, until_idle_s - idle_s))
            with beat.busy():
                done = run.step(max_rows, wait_s)
            status.update(run.source, max(run.part_max.values(), default=None), run.batch)
            if watch is not None:
                if done is not None and done.messages:
                    watch.arrived()
                else:
                    watch.tick()
            if done is not None:
                last_input = time.monotonic()
                if on_batch:
                    on_batch(run.result.log[-1])
            elif run.source.pending:
                last_input = time.monotonic()  # a file still landing is input on its way
            elif until_idle_s is not None and time.monotonic() - last_input >= until_idle_s:
                break
            if alert_sinks and not run.alerts_checked:
                with beat.busy():
                    run._alert()  # what a crash kept from being sent goes out now
    except Exception as exc:
        missing = missing_file_error(exc, source)
        if missing is not None:
            raise missing from exc
        raise
    else:
        result = run.result
        size = run.state.size()
        result.state_keys, result.state_bytes = size.keys, size.file_bytes
        log.info(
            "stopped after batch %d; dedup state: %d keys, %.1f MB on disk",
            run.batch,
            size.keys,
            size.file_bytes / 1e6,
        )
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if run is not None:
            run.close()
        beat.close()
    result.seconds = time.time() - started
    if tables.is_delta(tables.table_path(warehouse, tables.GOLD_STREAM)):
        result.windows = tables.dataset(
            tables.table_path(warehouse, tables.GOLD_STREAM)
        ).count_rows()
    return result
