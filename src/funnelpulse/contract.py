"""The data contract in one place: raw columns, event types, price bands, the funnel metrics and
the silver dedup key. SQL models, both engines, the stream, report, dashboard and detection render
from or import these, so a new metric or band is one edit here (plus the model that shows it).

The SQL fragments are DuckDB dialect; the Spark engine transpiles the rendered models with SQLGlot.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

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
