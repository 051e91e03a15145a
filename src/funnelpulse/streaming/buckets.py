"""Fine-grained live state: buckets of `live_bucket_minutes` (2 by default) of views, carts,
purchases and revenue for the whole shop, each brand and each price band, MERGEd per stream batch into
`gold_stream_funnel_buckets`, so an open window can be scored minutes after it happens.

Schema of `gold_stream_funnel_buckets` (one row per bucket and segment):

| column       | type            | meaning                                                     |
|--------------|-----------------|-------------------------------------------------------------|
| bucket_start | timestamp UTC   | start of the bucket (a multiple of bucket_minutes since 1970)|
| bucket_end   | timestamp UTC   | bucket_start + bucket_minutes                               |
| dimension    | string          | `shop`, `brand` or `price_band`                             |
| segment      | string          | `all` for the shop; the brand or band, `(unknown)` for NULL |
| views        | int64           | view events in the bucket                                   |
| carts        | int64           | cart events                                                 |
| purchases    | int64           | purchase events                                             |
| revenue      | double          | sum of purchase prices                                      |
| updated_at   | timestamp UTC   | wall-clock time of the batch that last changed the row      |

A batch holds only events not counted before (the stream drops repeats first), so its counts are
added to the row already there. A replayed batch is skipped through the table's transaction
version for `BUCKETS_APP_ID` (`SPARK_BUCKETS_APP_ID` for the Spark engine's batch ids), so calling
`merge_buckets` before the live table's own commit of the same batch keeps both exactly-once
across a crash between the two commits. Both engines feed the same `aggregate`, so the same
events give the same buckets whichever engine counted them.

Fault-injection checkpoints (funnelpulse.faults): `stream.buckets_aggregated` (batch aggregated,
nothing merged) and `stream.buckets_merged` (merge committed, the caller not yet told).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import faults, tables
from ..contract import BUCKET_SCHEMA, UNKNOWN, counts_sql
from ..errors import ConfigError
from ..localdb import connect

log = logging.getLogger(__name__)

BUCKETS_APP_ID = "funnelpulse-stream-buckets"  # the embedded engine's batch numbers
SPARK_BUCKETS_APP_ID = "funnelpulse-spark-buckets"  # Spark's micro-batch ids
DEFAULT_BUCKET_MINUTES = 2  # the default of the setting live_bucket_minutes
DIMENSIONS = ("shop", "brand", "price_band")
METRICS = ("views", "carts", "purchases", "revenue")
BUCKET_MATCH = (
    "t.bucket_start = s.bucket_start AND t.dimension = s.dimension AND t.segment = s.segment"
)
# Same counting rules as the batch hourly models (models/gold_funnel_hourly_*.sql).
_METRIC_SQL = "\n    " + counts_sql("    ")


def check_bucket_minutes(bucket_minutes: int) -> int:
    """Buckets must tile an hour exactly, so partial hours are whole numbers of buckets."""
    if isinstance(bucket_minutes, bool) or not isinstance(bucket_minutes, int):
        raise ConfigError(f"bucket_minutes must be a whole number, not {bucket_minutes!r}")
    if bucket_minutes <= 0 or 60 % bucket_minutes:
        raise ConfigError(
            f"live_bucket_minutes = {bucket_minutes} does not divide an hour. "
            "Use 1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60"
        )
    return bucket_minutes


def bucket_sql(view: str, bucket_minutes: int) -> str:
    """SQL: buckets of the events in `view` (event_time, event_type, brand_norm, price_band, price)."""
    step_us = check_bucket_minutes(bucket_minutes) * 60 * 1_000_000
    start = f"make_timestamp((epoch_us(event_time) // {step_us}) * {step_us})"
    parts = [
        f"SELECT b, 'shop' AS dimension, 'all' AS segment, {_METRIC_SQL} FROM e GROUP BY b",
        f"""SELECT b, 'brand', coalesce(brand_norm, '{UNKNOWN}'), {_METRIC_SQL}
            FROM e GROUP BY b, coalesce(brand_norm, '{UNKNOWN}')""",
        f"""SELECT b, 'price_band', coalesce(price_band, '{UNKNOWN}'), {_METRIC_SQL}
            FROM e GROUP BY b, coalesce(price_band, '{UNKNOWN}')""",
    ]
    return f"""
        WITH e AS (
            SELECT {start} AS b, event_type, brand_norm, price_band, price FROM {view}
            WHERE event_time IS NOT NULL
        )
        SELECT b AS bucket_start, b + INTERVAL {int(bucket_minutes)} MINUTE AS bucket_end,
            dimension, segment, views, carts, purchases, revenue
        FROM ({" UNION ALL ".join(parts)}) AS long
        ORDER BY bucket_start, dimension, segment"""


def aggregate(
    events: pa.Table | Any,
    bucket_minutes: int = DEFAULT_BUCKET_MINUTES,
    now: datetime | None = None,
) -> pa.Table:
    """Buckets (BUCKET_SCHEMA) of a batch of judged events: an Arrow table or a DuckDB relation."""
    now = now or datetime.now(UTC)
    if isinstance(events, pa.Table):
        con = connect()
        try:
            con.register("batch_events", events)
            result = con.sql(bucket_sql("batch_events", bucket_minutes)).to_arrow_table()
        finally:
            con.close()
    else:
        result = events.query("batch_events", bucket_sql("batch_events", bucket_minutes))
        result = result.to_arrow_table()
    columns = {
        "bucket_start": result.column("bucket_start").cast(pa.timestamp("us", "UTC")),
        "bucket_end": result.column("bucket_end").cast(pa.timestamp("us", "UTC")),
        **{name: result.column(name) for name in ("dimension", "segment", *METRICS)},
        "updated_at": pa.array([now] * result.num_rows, pa.timestamp("us", "UTC")),
    }
    return pa.table(columns, schema=BUCKET_SCHEMA)


def merge_buckets(
    path: str, buckets: pa.Table, batch_id: int | None = None, app_id: str = BUCKETS_APP_ID
) -> bool:
    """Add `buckets` to the table at `path` in one commit; False when `batch_id` was merged before.

    With a batch id the commit records it as the table's transaction version for `app_id` (one
    per engine: their batch numbers are unrelated), which is how a replay of the same batch after
    a crash is recognised and skipped.
    """
    from deltalake import CommitProperties, DeltaTable, Transaction

    if not tables.is_delta(path):
        if "://" not in path:
            Path(path).mkdir(parents=True, exist_ok=True)
        DeltaTable.create(path, BUCKET_SCHEMA)
    table = DeltaTable(path)
    if batch_id is not None:
        done = table.transaction_version(app_id)
        if done is not None and done >= batch_id:
            log.info("batch %d already in %s; skipped", batch_id, path)
            return False
    commit = (
        CommitProperties(app_transactions=[Transaction(app_id=app_id, version=batch_id)])
        if batch_id is not None
        else None
    )
    if buckets.num_rows == 0:
        if commit is not None:  # no rows, but the batch id is recorded all the same
            table.create_write_transaction(
                [], mode="append", schema=BUCKET_SCHEMA, commit_properties=commit
            )
        return True
    source = buckets.cast(BUCKET_SCHEMA)
    (
        table.merge(
            source,
            predicate=BUCKET_MATCH,
            source_alias="s",
            target_alias="t",
            commit_properties=commit,
        )
        .when_matched_update(
            {
                **{m: f"t.{m} + s.{m}" for m in METRICS},
                "updated_at": "s.updated_at",
            }
        )
        .when_not_matched_insert_all()
        .execute()
    )
    return True


def update_buckets(
    warehouse: str,
    events: pa.Table | Any,
    batch_id: int | None = None,
    bucket_minutes: int = DEFAULT_BUCKET_MINUTES,
    app_id: str = BUCKETS_APP_ID,
    removed: pa.Table | Any = None,
) -> int:
    """Aggregate one stream batch and merge it into `gold_stream_funnel_buckets`; rows merged.
    The events of `removed` (a replaced file's earlier rows) are subtracted."""
    buckets = aggregate(events, bucket_minutes)
    if removed is not None:
        buckets = _minus(buckets, aggregate(removed, bucket_minutes))
    faults.checkpoint("stream.buckets_aggregated")
    path = tables.table_path(warehouse, tables.GOLD_STREAM_BUCKETS)
    merged = merge_buckets(path, buckets, batch_id, app_id)
    faults.checkpoint("stream.buckets_merged")
    return buckets.num_rows if merged else 0


def _minus(plus: pa.Table, minus: pa.Table) -> pa.Table:
    """Bucket counts of `plus` less those of `minus`, per bucket and segment."""
    import pyarrow.compute as pc

    keys = ["bucket_start", "bucket_end", "dimension", "segment"]
    negated = minus.select(keys).append_column("updated_at", minus.column("updated_at"))
    for m in METRICS:
        negated = negated.append_column(m, pc.negate(minus.column(m)))
    both = pa.concat_tables([plus, negated.select(plus.column_names)])
    summed = both.group_by(keys).aggregate([(m, "sum") for m in METRICS] + [("updated_at", "max")])
    columns = {k: summed.column(k) for k in keys}
    columns.update({m: summed.column(f"{m}_sum") for m in METRICS})
    columns["updated_at"] = summed.column("updated_at_max")
    return pa.table(columns).select(BUCKET_SCHEMA.names).cast(BUCKET_SCHEMA)


def read_buckets(warehouse: str, since: datetime | None = None) -> pa.Table:
    """The live buckets (from `since` on), or an empty table when the stream has not run."""
    import pyarrow.dataset as ds

    path = tables.table_path(warehouse, tables.GOLD_STREAM_BUCKETS)
    if not tables.exists(path):
        return BUCKET_SCHEMA.empty_table()
    flt = ds.field("bucket_start") >= pa.scalar(since, pa.timestamp("us", "UTC")) if since else None
    return tables.dataset(path).to_table(filter=flt).cast(BUCKET_SCHEMA)
