"""`funnelpulse replay`: publish events to Kafka in event-time order, keyed by user_session."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from .. import tables
from ..console import Progress, SilentProgress
from ..errors import FunnelPulseError, InputError
from ..ingest import RAW_COLUMNS
from ..localdb import connect
from .kafka_client import client, producer_config
from .kafka_url import parse_kafka

log = logging.getLogger(__name__)

# The raw columns as the REES46 text has them, one JSON object per event.
JSON_SQL = """
SELECT to_json({
    'event_time': strftime(event_time, '%Y-%m-%d %H:%M:%S') || ' UTC', 'event_type': event_type,
    'product_id': product_id, 'category_id': category_id, 'category_code': category_code,
    'brand': brand, 'price': price, 'user_id': user_id, 'user_session': user_session
})::VARCHAR AS value, user_session AS key, epoch(event_time) AS ts
FROM events ORDER BY event_time, source_order
"""


@dataclass
class ReplayResult:
    published: int
    seconds: float
    failed: int = 0


def _events(warehouse: str, sources: list[str]) -> pa.Table:
    con = connect()
    try:
        if sources == ["bronze"]:
            path = tables.table_path(warehouse, tables.BRONZE)
            con.register("bronze", tables.dataset(path))
            con.execute(
                "CREATE VIEW events AS SELECT *, (source_file, source_row) AS source_order FROM bronze"
            )
        else:
            files = [str(Path(s)) for s in sources]
            for f in files:
                if not Path(f).exists():
                    raise InputError(f"{f}: no such file. Check the path")
            listed = ", ".join(tables.sql_quote(f) for f in files)
            columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in RAW_COLUMNS) + "}"
            reader = (
                f"read_parquet([{listed}])"
                if all(f.endswith(".parquet") for f in files)
                else f"read_csv([{listed}], columns={columns}, header=true, auto_detect=false, ignore_errors=true)"
            )
            con.execute(
                f"""CREATE VIEW events AS SELECT
                    coalesce(try_strptime(CAST(event_time AS VARCHAR), '%Y-%m-%d %H:%M:%S UTC'),
                             TRY_CAST(event_time AS TIMESTAMP)) AS event_time,
                    event_type, TRY_CAST(product_id AS BIGINT) AS product_id,
                    TRY_CAST(category_id AS BIGINT) AS category_id, category_code, brand,
                    TRY_CAST(price AS DOUBLE) AS price, TRY_CAST(user_id AS BIGINT) AS user_id, user_session,
                    0 AS source_order
                FROM {reader} WHERE event_time IS NOT NULL"""
            )
        return con.sql(JSON_SQL).to_arrow_table()
    finally:
        con.close()


def _producer(bootstrap: str, options: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """A batching producer (lz4, linger): every record batch of the bundled broker is read back
    whole, and batching is what makes publishing fast."""
    config = producer_config(bootstrap, options)
    config["error_cb"] = lambda error: log.warning("Kafka at %s: %s", bootstrap, error.str())
    config["logger"] = logging.getLogger("funnelpulse.kafka")
    return client("Producer", config)


def publish(
    target: str,
    messages: Iterator[tuple[str, str | None, float]],
    progress: Progress | None = None,
    total: int | None = None,
    options: dict[str, str] | None = None,
) -> ReplayResult:
    """Send (value, key, send_at) messages; waits until `send_at` (a perf_counter time) when > 0.

    Flow control instead of time-outs: when the producer's queue is full it waits for
    deliveries. Every delivery report is checked at the end; if any message was not delivered
    this raises, saying how many."""
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
    sent = 0
    for value, key, send_at in messages:
        if send_at:
            wait = send_at - time.perf_counter()
            if wait > 0:
                producer.poll(0)
                time.sleep(wait)
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
        if sent % 10_000 == 0:
            producer.poll(0)
            if progress and sent % 100_000 == 0:
                progress.step(f"Published {sent:,}" + (f" of {total:,}" if total else ""))
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
    events = _events(warehouse, sources)
    if events.num_rows == 0:
        raise InputError("No events to replay. Ingest some first, or give raw files")
    values = events.column("value").to_pylist()
    keys = events.column("key").to_pylist()
    stamps = events.column("ts").to_pylist()
    start_wall = time.perf_counter()
    first = stamps[0]

    def messages() -> Iterator[tuple[str, str | None, float]]:
        for value, key, ts in zip(values, keys, stamps, strict=True):
            yield value, key, (start_wall + (ts - first) / speedup) if speedup > 0 else 0.0

    progress.step(f"Publishing {len(values):,} events")
    return publish(target, messages(), progress, len(values), options)


def synthetic(
    target: str,
    rate: float,
    seconds: float,
    seed: int = 0,
    options: dict[str, str] | None = None,
) -> ReplayResult:
    """Produce generated events live at `rate` events/s for `seconds`, stamped with the current time."""
    from ..generate import generate_events

    total = max(1, int(rate * seconds))
    table = generate_events(
        total, seed=seed, start=datetime.now(UTC).replace(minute=0, second=0, microsecond=0), days=1
    )
    rows = table.to_pylist()
    start_wall = time.perf_counter()

    def messages() -> Iterator[tuple[str, str | None, float]]:
        for i, row in enumerate(rows):
            now = datetime.now(UTC)
            row["event_time"] = now.strftime("%Y-%m-%d %H:%M:%S UTC")
            yield json.dumps(row), row["user_session"], start_wall + i / rate

    return publish(target, messages(), None, total, options)
