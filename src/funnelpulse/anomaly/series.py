"""Hourly funnel series per segment, dense over time, built from silver with DuckDB."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from ..contract import COUNTS, UNKNOWN, counts_sql

DIMENSIONS = ("shop", "brand", "price_band")
# Per hour x brand x price band x category root: every analysis is a roll-up of this.
CUBE_SELECT = f"""
SELECT
    date_trunc('hour', event_time) AS hour,
    coalesce(brand_norm, '{UNKNOWN}') AS brand,
    price_band,
    coalesce(category_root, '{UNKNOWN}') AS category_root,
    {counts_sql("    ")}
FROM silver_events
GROUP BY ALL
"""
CUBE_SQL = f"CREATE OR REPLACE TEMP TABLE cube AS {CUBE_SELECT}"
METRICS = tuple(COUNTS)


@dataclass
class Series:
    """Dense (segment, hour) arrays for one analysis."""

    hours: np.ndarray  # datetime64[us], (T,)
    dimension: list[str]  # (S,)
    segment: list[str]  # (S,)
    values: dict[str, np.ndarray]  # metric -> (S, T)

    def index(self, dimension: str, segment: str) -> int:
        for i, (d, s) in enumerate(zip(self.dimension, self.segment, strict=True)):
            if d == dimension and s == segment:
                return i
        raise KeyError((dimension, segment))


def build_series(  # type: ignore[no-untyped-def]
    con,
    min_total_views: int,
    dimensions: tuple[str, ...] = DIMENSIONS,
    *,
    keys: list[tuple[str, str]] | None = None,
    brands_from: str | None = None,
    table: str = "cube",
) -> Series:
    """`dimensions` series from the `cube` table (brands below the volume floor are skipped).

    `cube` has hour, brand, views, carts, purchases, revenue, and price_band when scored.
    `brands_from` is the table whose totals decide the volume floor, and `keys` the segments to
    give a row each (those of the whole history when `cube` holds a part of it)."""
    brands_from = brands_from or table
    span = con.sql(f"SELECT MIN(hour)::TIMESTAMP, MAX(hour)::TIMESTAMP FROM {table}").fetchall()[0]
    if span is None or span[0] is None:
        return Series(
            np.array([], dtype="datetime64[us]"), [], [], {m: np.zeros((0, 0)) for m in METRICS}
        )
    start, end = (np.datetime64(_naive(x), "us") for x in span)
    hours = np.arange(start, end + np.timedelta64(1, "h"), np.timedelta64(1, "h"))
    sums = "SUM(views) v, SUM(carts) c, SUM(purchases) p, SUM(revenue) r"
    parts = {
        "shop": f"SELECT 'shop' AS dimension, 'all' AS segment, hour, {sums} FROM {table} "
        "GROUP BY hour",
        "brand": f"""SELECT 'brand' AS dimension, brand AS segment, hour, {sums} FROM {table}
            WHERE brand IN (SELECT brand FROM brands) GROUP BY brand, hour""",
        "price_band": f"""SELECT 'price_band' AS dimension, price_band AS segment, hour, {sums}
            FROM {table} GROUP BY price_band, hour""",
    }
    long = con.sql(
        f"""
        WITH brands AS (
            SELECT brand FROM {brands_from} GROUP BY brand
            HAVING SUM(views) >= {int(min_total_views)}
        )
        {" UNION ALL ".join(parts[d] for d in dimensions)}
        """
    ).to_arrow_table()
    return _densify(long, hours, keys)


def segment_keys(  # type: ignore[no-untyped-def]
    con, min_total_views: int, table: str = "cube"
) -> list[tuple[str, str]]:
    """The (dimension, segment) rows `build_series` gives `table`, in its order."""
    found = con.sql(
        f"""
        SELECT 'brand', brand FROM {table} GROUP BY brand
        HAVING SUM(views) >= {int(min_total_views)}
        UNION ALL SELECT DISTINCT 'price_band', price_band FROM {table}
        UNION ALL SELECT DISTINCT 'shop', 'all' FROM {table}
        """
    ).fetchall()
    return sorted(((d, s) for d, s in found), key=lambda k: (DIMENSIONS.index(k[0]), k[1]))


def _naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None) if value.tzinfo else value


def _densify(
    long: pa.Table, hours: np.ndarray, keys: list[tuple[str, str]] | None = None
) -> Series:
    dims = long.column("dimension").to_pylist()
    segs = long.column("segment").to_pylist()
    if keys is None:
        keys = sorted(
            set(zip(dims, segs, strict=True)), key=lambda k: (DIMENSIONS.index(k[0]), k[1])
        )
    row_of = {k: i for i, k in enumerate(keys)}
    rows = np.array([row_of[k] for k in zip(dims, segs, strict=True)], dtype=np.int64)
    hour_values = long.column("hour").cast(pa.timestamp("us")).to_numpy()
    cols = ((hour_values - hours[0]) // np.timedelta64(1, "h")).astype(np.int64)
    values = {}
    for metric, col in zip(METRICS, ("v", "c", "p", "r"), strict=True):
        dense = np.zeros((len(keys), len(hours)))
        dense[rows, cols] = long.column(col).to_numpy(zero_copy_only=False).astype(float)
        values[metric] = dense
    return Series(hours, [k[0] for k in keys], [k[1] for k in keys], values)
