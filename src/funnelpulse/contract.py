"""The data contract in one place: raw columns, event types, price bands, the funnel metrics, the
silver dedup key and the schema of every table written from Arrow. SQL models, both engines, the
stream, report, dashboard and detection render from or import these, so a new metric or band is
one edit here (plus the model that shows it).

The SQL fragments are DuckDB dialect; the Spark engine transpiles the rendered models with SQLGlot.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from datetime import datetime

RAW_COLUMNS = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")

# Two events with these equal are one event; the first ingested copy survives.
DEDUP_KEY = ("event_time", "user_id", "user_session", "product_id", "event_type")

# (label, exclusive upper bound); the last band has no bound. Bounds are on the event's price.
PRICE_BANDS: tuple[tuple[str, float | None], ...] = (
    ("<10", 10.0),
    ("10-30", 30.0),
    ("30-60", 60.0),
    ("60_plus", None),
)
BAND_LABELS = tuple(label for label, _ in PRICE_BANDS)
BAND_BOUNDS = tuple(bound for _, bound in PRICE_BANDS if bound is not None)

# How a NULL brand or category is shown to people (it stays NULL in the tables).
UNKNOWN = "(unknown)"


def anomaly_id(
    method: str, dimension: str, segment: str, step: str, start: datetime, hours: int = 1
) -> str:
    """The anomalies table's key: the same finding always gets the same id, so reruns replace it."""
    key = f"{method}|{dimension}|{segment}|{step}|{start.isoformat()}"
    key += f"|{hours}h" if hours != 1 else ""
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


# The funnel's counts per window: name -> aggregate over silver events (DuckDB SQL).
COUNTS: dict[str, str] = {
    "views": "CAST(COUNT_IF(event_type = 'view') AS BIGINT)",
    "carts": "CAST(COUNT_IF(event_type = 'cart') AS BIGINT)",
    "purchases": "CAST(COUNT_IF(event_type = 'purchase') AS BIGINT)",
    "revenue": "CAST(SUM(CASE WHEN event_type = 'purchase' THEN price ELSE 0.0 END) AS DOUBLE)",
}
# The funnel's rates: name -> (numerator, denominator); NULL when the denominator is 0.
RATES: dict[str, tuple[str, str]] = {
    "view_to_cart_rate": ("carts", "views"),
    "cart_to_purchase_rate": ("purchases", "carts"),
    "conversion_rate": ("purchases", "views"),
}


def rate(numerator: float, denominator: float) -> float | None:
    """A funnel rate as the models compute it: None (NULL) when the denominator is 0."""
    return numerator / denominator if denominator else None


def rates(counts: dict[str, float]) -> dict[str, float | None]:
    """Every rate of RATES from a row of counts."""
    return {name: rate(counts[num], counts[den]) for name, (num, den) in RATES.items()}


def price_band_sql(price: str = "price") -> str:
    """SQL CASE giving the band label of `price`."""
    arms = " ".join(
        f"WHEN {price} < {bound:g} THEN '{label}'" for label, bound in PRICE_BANDS if bound
    )
    return f"CASE {arms} ELSE '{BAND_LABELS[-1]}' END"


def band_order_sql(column: str = "price_band") -> str:
    """SQL giving each band label its position, for ORDER BY."""
    arms = " ".join(f"WHEN '{label}' THEN {i}" for i, label in enumerate(BAND_LABELS))
    return f"CASE {column} {arms} ELSE {len(BAND_LABELS)} END"


def rollup_sql(revenue_digits: int | None = None, indent: str = "    ") -> str:
    """Gold rows rolled up: counts summed, rates recomputed from the sums (never averaged)."""
    parts = []
    for name in COUNTS:
        if name == "revenue":
            total = "COALESCE(SUM(revenue), 0.0)"
            parts.append(
                f"ROUND({total}, {revenue_digits}) AS revenue"
                if revenue_digits is not None
                else f"{total} AS revenue"
            )
        else:
            parts.append(f"CAST(COALESCE(SUM({name}), 0) AS BIGINT) AS {name}")
    parts += [f"SUM({num}) / NULLIF(SUM({den}), 0) AS {name}" for name, (num, den) in RATES.items()]
    return f",\n{indent}".join(parts)


def counts_sql(indent: str = "        ") -> str:
    """The COUNTS as a SELECT list."""
    return f",\n{indent}".join(f"{expr} AS {name}" for name, expr in COUNTS.items())


def rates_sql(indent: str = "    ") -> str:
    """The RATES as a SELECT list with NULL-safe division (Spark's ANSI mode raises on x/0)."""
    return f",\n{indent}".join(
        f"{num} / NULLIF({den}, 0) AS {name}" for name, (num, den) in RATES.items()
    )


_FRAGMENTS = {
    "count_names": lambda indent: ", ".join(COUNTS),
    "counts": counts_sql,
    "rates": rates_sql,
    "price_band": lambda indent: price_band_sql(),
    "dedup_key": lambda indent: ", ".join(DEDUP_KEY),
}


def render(sql: str) -> str:
    """Fill a model's `{{ name }}` placeholders with the contract's fragments, keeping indentation."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in _FRAGMENTS:
            raise KeyError(f"unknown contract fragment {{{{ {name} }}}}")
        line_start = sql.rfind("\n", 0, match.start()) + 1
        indent = re.match(r"[ \t]*", sql[line_start:]).group(0)  # type: ignore[union-attr]
        return _FRAGMENTS[name](indent)

    return re.sub(r"\{\{\s*(\w+)\s*\}\}", fill, sql)


# -- table schemas ------------------------------------------------------------------------------
# Tables the models build (silver, gold) take their schema from their SQL; these are the ones
# written from Arrow. Times are UTC microseconds everywhere.
_UTC = pa.timestamp("us", "UTC")

BRONZE_SCHEMA = pa.schema(
    [
        ("event_time", _UTC),
        ("event_type", pa.string()),
        ("product_id", pa.int64()),
        ("category_id", pa.int64()),
        ("category_code", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("user_id", pa.int64()),
        ("user_session", pa.string()),
        ("event_date", pa.date32()),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("ingest_id", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("line_number", pa.int64()),
        ("raw_line", pa.string()),
        ("reason", pa.string()),
        ("ingest_id", pa.string()),
        ("ingested_at", _UTC),
    ]
)
# The live hourly-brand table both stream engines keep (gold_stream_funnel_hourly_brand).
STREAM_SCHEMA = pa.schema(
    [
        ("brand", pa.string()),
        ("views", pa.int64()),
        ("carts", pa.int64()),
        ("purchases", pa.int64()),
        ("revenue", pa.float64()),
        ("window_start", _UTC),
        ("window_end", _UTC),
        ("view_to_cart_rate", pa.float64()),
        ("cart_to_purchase_rate", pa.float64()),
        ("conversion_rate", pa.float64()),
        ("window_date", pa.date32()),
        ("is_final", pa.bool_()),
        ("last_event_at", _UTC),
        ("updated_at", _UTC),
    ]
)
# The live buckets (live_bucket_minutes, 2 by default) per segment (gold_stream_funnel_buckets).
BUCKET_SCHEMA = pa.schema(
    [
        ("bucket_start", _UTC),
        ("bucket_end", _UTC),
        ("dimension", pa.string()),
        ("segment", pa.string()),
        ("views", pa.int64()),
        ("carts", pa.int64()),
        ("purchases", pa.int64()),
        ("revenue", pa.float64()),
        ("updated_at", _UTC),
    ]
)
ANOMALY_SCHEMA = pa.schema(
    [
        ("anomaly_id", pa.string()),
        ("method", pa.string()),
        ("window_start", _UTC),
        ("window_end", _UTC),
        ("dimension", pa.string()),
        ("segment", pa.string()),
        ("step", pa.string()),
        ("type", pa.string()),
        ("observed_rate", pa.float64()),
        ("expected_rate", pa.float64()),
        ("numerator", pa.int64()),
        ("denominator", pa.int64()),
        ("z", pa.float64()),
        ("p_value", pa.float64()),
        ("severity", pa.string()),
        ("lost_purchases", pa.float64()),
        ("lost_revenue", pa.float64()),
        ("root_cause", pa.string()),
        ("detected_at", _UTC),
        ("window_date", pa.date32()),
        ("window_hours", pa.int64()),
    ]
)
# Open-window incidents of the last day (live_incidents).
INCIDENT_SCHEMA = pa.schema(
    [
        ("incident_id", pa.string()),
        ("dimension", pa.string()),
        ("segment", pa.string()),
        ("status", pa.string()),  # open | resolved
        ("step", pa.string()),
        ("type", pa.string()),
        ("severity", pa.string()),
        ("started_at", _UTC),
        ("detected_at", _UTC),  # event time of the first alert
        ("last_firing_at", _UTC),
        ("resolved_at", _UTC),
        ("as_of", _UTC),  # end of the newest complete bucket
        ("minutes", pa.float64()),  # how long it has run (to as_of, or to resolved_at)
        ("window_minutes", pa.int64()),
        ("observed", pa.float64()),
        ("expected", pa.float64()),
        ("trials", pa.float64()),
        ("z", pa.float64()),
        ("p", pa.float64()),
        ("lost_purchases", pa.float64()),
        ("lost_revenue", pa.float64()),
        ("drivers", pa.string()),  # JSON list of {dimension, segment, share}
        ("updated_at", _UTC),
    ]
)
# The lasting incidents, batch and live (anomaly/incident_store.py): one row per real event.
# The id is fixed when it first fires and is the alerts' idempotency key.
INCIDENTS_SCHEMA = pa.schema(
    [
        ("incident_id", pa.string()),
        ("root", pa.string()),  # dimension:value of the segment that explains the others
        ("step", pa.string()),  # step and kind of the firing that opened it
        ("kind", pa.string()),
        ("status", pa.string()),  # open | resolved
        ("severity", pa.string()),
        ("started_at", _UTC),  # first hour whose own evidence moved
        ("ended_at", _UTC),  # end of the last such hour
        ("first_hour", _UTC),  # the hour whose data first fired
        ("segments", pa.string()),  # JSON list of every segment that fired (dimension:value)
        ("drivers", pa.string()),  # JSON list of {segment, share} from the root cause
        ("effects", pa.string()),  # comma-separated: down, up, views_down, views_up
        ("z", pa.float64()),
        ("lost_purchases", pa.float64()),
        ("lost_revenue", pa.float64()),
        ("source", pa.string()),  # batch | live: which path found it first
        ("anomaly_ids", pa.string()),  # JSON list
        ("first_recorded_at", _UTC),
        ("updated_at", _UTC),
    ]
)
# Known events (funnelpulse annotate): detection raises nothing inside and leaves them out of baselines.
ANNOTATION_SCHEMA = pa.schema(
    [
        ("annotation_id", pa.string()),
        ("start", _UTC),
        ("end", _UTC),
        ("segment", pa.string()),  # dimension:value, or null for the whole shop
        ("text", pa.string()),
        ("created_at", _UTC),
    ]
)
# One row per state of one alert delivery.
ALERT_SCHEMA = pa.schema(
    [
        ("incident_id", pa.string()),
        ("sink", pa.string()),
        ("status", pa.string()),  # sending | sent | failed | cooldown
        ("attempts", pa.int64()),
        ("error", pa.string()),
        ("severity", pa.string()),
        ("dimension", pa.string()),
        ("segment", pa.string()),
        ("incident_start", _UTC),
        ("incident_end", _UTC),
        ("message", pa.string()),
        ("recorded_at", _UTC),
    ]
)
