"""`funnelpulse replay`: publish events to Kafka in event-time order, keyed by user_session."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import tables
from ..console import Progress, SilentProgress
from ..engines.duckdb_ingest import raw_view
from ..errors import FunnelPulseError, InputError, Interrupted
from ..ingest import check_file, typed_sql
from ..localdb import connect
from .kafka_client import client, producer_config
from .kafka_url import parse_kafka

log = logging.getLogger(__name__)

# The raw columns as the REES46 text has them, one JSON object per event (sub-second digits kept).
JSON_SQL = """
SELECT to_json({
    'event_time': CASE WHEN epoch_us(event_time) % 1000000 = 0
        THEN strftime(event_time, '%Y-%m-%d %H:%M:%S UTC')
        ELSE strftime(event_time, '%Y-%m-%d %H:%M:%S.%f UTC') END,
    'event_type': event_type,
    'product_id': product_id, 'category_id': category_id, 'category_code': category_code,
    'brand': brand, 'price': price, 'user_id': user_id, 'user_session': user_session
})::VARCHAR AS value, user_session AS key, epoch(event_time) AS ts
FROM events ORDER BY event_time, source_order
"""
# Line numbers listed per reason in the summary; the rest are counted.
LINES_SHOWN = 5


@dataclass
class Skipped:
    """Rows of the given files that were not published: reason -> (file, line number) of each."""

    lines: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def add(self, reason: str, source: str, line: int) -> None:
        self.lines.setdefault(reason, []).append((source, line))

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.lines.values())

    def summary(self) -> str:
        """`Skipped 7 rows: 5 too many columns (lines 12, 14, ...), ...`, or '' when none."""
        if not self.total:
            return ""
        several_files = len({f for v in self.lines.values() for f, _ in v}) > 1
        parts = []
        for reason, where in sorted(self.lines.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            shown = [f"{Path(f).name}:{n}" if several_files else str(n) for f, n in where]
            listed = ", ".join(shown[:LINES_SHOWN]) + (", ..." if len(shown) > LINES_SHOWN else "")
            parts.append(f"{len(where):,} {reason} (line{'s' if len(where) > 1 else ''} {listed})")
        rows = "row" if self.total == 1 else "rows"
        return f"Skipped {self.total:,} {rows} that ingest would quarantine: " + "; ".join(parts)


@dataclass
class ReplayResult:
    published: int
    seconds: float
    failed: int = 0
    skipped: Skipped = field(default_factory=Skipped)


def _reason_class(reason: str) -> str:
    """The kind of a quarantine reason, as ingest counts them (`bad event_time`, not its value)."""
    return reason.split(":")[0]


def _events(warehouse: str, sources: list[str], skipped: Skipped) -> pa.Table:
    con = connect()
    try:
        if sources == ["bronze"]:
            path = tables.table_path(warehouse, tables.BRONZE)
            con.register("bronze", tables.dataset(path))
            con.execute(
                "CREATE VIEW events AS SELECT *, (source_file, source_row) AS source_order FROM bronze"
            )
        else:
            _judged_files(con, [Path(s) for s in sources], skipped)
        return con.sql(JSON_SQL).to_arrow_table()
    finally:
        con.close()


def _judged_files(con: Any, files: list[Path], skipped: Skipped) -> None:
    """View `events` over the rows of `files` that ingest would put in bronze: the same checks,
    reader and typing rules; each row it would quarantine is added to `skipped` instead."""
    for f in files:
        if not f.exists():
            raise InputError(f"{f}: no such file. Check the path")
    selects = []
    for number, f in enumerate(files):
        header = check_file(f)
        accounts = raw_view(con, f, header)
        con.execute(
            f"CREATE TEMP TABLE judged_{number} AS SELECT * FROM ({typed_sql()})"
        ).fetchall()
        bad = con.execute(
            f"SELECT ordinal, reason FROM judged_{number} WHERE reason IS NOT NULL ORDER BY ordinal"
        ).fetchall()
        count = f"SELECT count(*) FROM judged_{number} WHERE reason IS NULL"
        (good,) = con.execute(count).fetchall()[0]
        accounts.check(good, len(bad))  # every line of the file is one of the two
        for ordinal, reason in bad:
            # as quarantine_events: the line in the file, counting the header
            skipped.add(_reason_class(reason), str(f), ordinal + (1 if header else 0))
        selects.append(
            f"SELECT event_time, event_type, product_id, category_id, category_code, brand, "
            f"price, user_id, user_session, ({number}, ordinal) AS source_order "
            f"FROM judged_{number} WHERE reason IS NULL"
        )
    con.execute("CREATE VIEW events AS " + " UNION ALL ".join(selects))


def _producer(bootstrap: str, options: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """A batching producer (lz4, linger): every record batch of the bundled broker is read back
    whole, and batching is what makes publishing fast."""
    config = producer_config(bootstrap, options)
    config["error_cb"] = lambda error: log.warning("Kafka at %s: %s", bootstrap, error.str())
    config["logger"] = logging.getLogger("funnelpulse.kafka")
    return client("Producer", config)


# Seconds between two progress lines of a replay (FUNNELPULSE_PROGRESS_S overrides it).
PROGRESS_EVERY_S = 5.0


def _progress_every_s() -> float:
    import os

    try:
        return max(float(os.environ.get("FUNNELPULSE_PROGRESS_S", PROGRESS_EVERY_S)), 0.1)
    except ValueError:
        return PROGRESS_EVERY_S


def _progress_line(
    sent: int, total: int | None, started: float, event_ts: float | None, left_s: float | None
) -> str:
    """`Published 12,000 of 40,000 events (6,000/s), event time 2019-10-01 10:23 UTC, ~5 s left`."""
    elapsed = max(time.perf_counter() - started, 1e-9)
    line = (
        f"Published {sent:,}"
        + (f" of {total:,}" if total else "")
        + f" events ({sent / elapsed:,.0f}/s)"
    )
    if event_ts is not None:
        line += f", event time {datetime.fromtimestamp(event_ts, UTC):%Y-%m-%d %H:%M} UTC"
    if left_s is not None:
        line += f", ~{left_s:,.0f} s left"
    return line


def publish(
    target: str,
    messages: Iterator[tuple[Any, ...]],
    progress: Progress | None = None,
    total: int | None = None,
    options: dict[str, str] | None = None,
    last_send_at: float | None = None,
) -> ReplayResult:
    """Send (value, key, send_at[, event time]) messages; waits until `send_at` (a perf_counter
    time) when > 0. A progress line every PROGRESS_EVERY_S: events, rate, event time reached.

    Flow control instead of time-outs: when the producer's queue is full it waits for
    deliveries. Every delivery report is checked at the end; if any message was not delivered
    this raises, saying how many. Ctrl-C stops publishing, waits briefly for the deliveries of
    what was sent and raises Interrupted saying how many were published."""
    address = parse_kafka(target)
    producer = _producer(address.bootstrap, options)
    errors: Counter[str] = Counter()
    delivered = [0]

    def report(err, _msg) -> None:  # type: ignore[no-untyped-def]
        if err is None:
            delivered[0] += 1
        else:
            errors[err.str()] += 1

    started = time.perf_counter()
    every_s = _progress_every_s()
    next_line = started + every_s
    sent = 0
    reached: float | None = None
    try:
        for value, key, send_at, *stamp in messages:
            event_ts = stamp[0] if stamp else None
            if send_at:
                wait = send_at - time.perf_counter()
                while wait > 0:  # sleep in short steps: progress lines keep coming while waiting
                    producer.poll(0)
                    time.sleep(min(wait, max(next_line - time.perf_counter(), 0.01)))
                    wait = send_at - time.perf_counter()
                    if progress and time.perf_counter() >= next_line:
                        next_line = time.perf_counter() + every_s
                        left = None if last_send_at is None else last_send_at - time.perf_counter()
                        progress.step(_progress_line(sent, total, started, reached, left))
            while True:
                try:
                    producer.produce(
                        address.topic,
                        value=value.encode(),
                        key=key.encode() if key else None,
                        on_delivery=report,
                    )
                    break
                except BufferError:  # queue full: serve delivery reports until there is room
                    producer.poll(0.1)
            sent += 1
            reached = event_ts if event_ts is not None else reached
            if sent % 1_000 == 0:
                producer.poll(0)
                if progress and time.perf_counter() >= next_line:
                    next_line = time.perf_counter() + every_s
                    left = (
                        last_send_at - time.perf_counter()
                        if last_send_at is not None
                        else (total - sent) / (sent / (time.perf_counter() - started))
                        if total
                        else None
                    )
                    progress.step(_progress_line(sent, total, started, reached, left))
    except KeyboardInterrupt:
        producer.flush(5)  # within the Ctrl-C grace: what was sent gets its delivery report
        when = (
            f"; event time reached {datetime.fromtimestamp(reached, UTC):%Y-%m-%d %H:%M:%S} UTC"
            if reached is not None
            else ""
        )
        of = f" of {total:,}" if total else ""
        raise Interrupted(
            f"published {delivered[0]:,}{of} events to {target} before Ctrl-C "
            f"({sent - delivered[0]:,} sent without a delivery report){when}"
        ) from None
    # Every message ends with a delivery report (at the latest after message.timeout.ms).
    unreported = producer.flush(180)
    seconds = time.perf_counter() - started
    failed = sent - delivered[0]
    if failed:
        cause = "; ".join(f"{n:,} x {text}" for text, n in errors.most_common(3)) or (
            f"{unreported:,} without a delivery report"
        )
        raise FunnelPulseError(
            f"{failed:,} of {sent:,} events were not delivered to {address.bootstrap} "
            f"({cause}); {delivered[0]:,} were. Check the broker and replay again "
            "(the stream drops the events it already counted)"
        )
    return ReplayResult(delivered[0], seconds, 0)


def replay(
    warehouse: str,
    target: str,
    sources: list[str],
    speedup: float = 0.0,
    progress: Progress | None = None,
    options: dict[str, str] | None = None,
) -> ReplayResult:
    """Publish stored events in event-time order; `speedup` 3600 plays an hour per second, 0 = flat out."""
    progress = progress or SilentProgress()
    progress.step("Reading events")
    skipped = Skipped()
    events = _events(warehouse, sources, skipped)
    if events.num_rows == 0:
        if skipped.total:
            raise InputError(
                f"No events to replay: every row of the given files would be quarantined. "
                f"{skipped.summary()}. Fix the files, or check them with `funnelpulse ingest`"
            )
        raise InputError("No events to replay. Ingest some first, or give raw files")
    if skipped.total:
        progress.step(skipped.summary())
    values = events.column("value").to_pylist()
    keys = events.column("key").to_pylist()
    stamps = events.column("ts").to_pylist()
    start_wall = time.perf_counter()
    first = stamps[0]

    def messages() -> Iterator[tuple[str, str | None, float, float | None]]:
        for value, key, ts in zip(values, keys, stamps, strict=True):
            send_at = (start_wall + (ts - first) / speedup) if speedup > 0 else 0.0
            yield value, key, send_at, ts

    last = start_wall + (stamps[-1] - first) / speedup if speedup > 0 else None
    span = (
        f", {(stamps[-1] - first) / 3600:,.1f} h of event time in ~{(stamps[-1] - first) / speedup:,.0f} s"
        if speedup > 0
        else ""
    )
    progress.step(f"Publishing {len(values):,} events{span}")
    result = publish(target, messages(), progress, len(values), options, last)
    result.skipped = skipped
    return result


def synthetic(
    target: str,
    rate: float,
    seconds: float,
    seed: int = 0,
    options: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Produce generated events live at `rate` events/s for `seconds`, stamped with the current time."""
    from ..generate import generate_events

    total = max(1, int(rate * seconds))
    table = generate_events(
        total, seed=seed, start=datetime.now(UTC).replace(minute=0, second=0, microsecond=0), days=1
    )
    rows = table.to_pylist()
    start_wall = time.perf_counter()

    def messages() -> Iterator[tuple[str, str | None, float, float | None]]:
        for i, row in enumerate(rows):
            now = datetime.now(UTC)
            row["event_time"] = now.strftime("%Y-%m-%d %H:%M:%S UTC")
            yield json.dumps(row), row["user_session"], start_wall + i / rate, now.timestamp()

    return publish(target, messages(), progress, total, options, start_wall + seconds)
