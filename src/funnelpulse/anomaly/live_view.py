"""What the dashboard's Live page shows: a segment's live bucket series against its expected band."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from ..config import Settings
from ..streaming.buckets import read_buckets
from .live_data import segment_keys
from .live_incidents import options, scored_window
from .open_window import STEPS


def latest_bucket(warehouse: str) -> datetime | None:
    """Start of the newest live bucket (None before the stream has written any)."""
    buckets = read_buckets(warehouse)
    if buckets.num_rows == 0:
        return None
    return max(buckets.column("bucket_start").to_pylist())


def live_series(
    warehouse: str,
    settings: Settings,
    dimension: str,
    segment: str,
    step: str = "cart_to_purchase",
    hours: int = 6,
    bucket_minutes: int | None = None,
) -> pa.Table:
    """bucket_start, observed, expected, low, high for the last `hours` of live buckets.

    Observed is the step's event count per bucket (views; carts for view to cart; purchases for
    cart to purchase), expected what the past same hours predict (given the bucket's views or
    carts for a rate), and the band about 95% of buckets fall in: +-2 standard deviations with
    the bucket-scale dispersion measured on the past week.
    """
    empty = pa.table(
        {
            "bucket_start": pa.array([], pa.timestamp("us", "UTC")),
            **{c: pa.array([], pa.float64()) for c in ("observed", "expected", "low", "high")},
        }
    )
    newest = latest_bucket(warehouse)
    if newest is None or step not in STEPS:
        return empty
    keys = segment_keys(warehouse, settings.min_views)
    if (dimension, segment) not in keys:
        keys = [*keys, (dimension, segment)]
    first = newest - timedelta(hours=hours)
    bucket_minutes = bucket_minutes or settings.live_bucket_minutes
    opts = options(settings)
    window = scored_window(warehouse, first, newest, bucket_minutes, keys, opts)
    if window is None:
        return empty
    grid, history, scores = window
    s = keys.index((dimension, segment))
    observed, expected = (a[s] for a in scores.per_bucket[step])
    shape = (len(keys), len(grid.starts))
    phi = np.broadcast_to(history.dispersion.get(step, np.ones((1, 1))), shape)[s]
    _, den_name = STEPS[step]
    if den_name is None:
        var = phi * expected + (0.1 * expected) ** 2
    else:
        n = grid.values[den_name][s]
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(n > 0, expected / n, 0.0)
        var = phi * n * p * (1 - p)
    sd = np.sqrt(np.nan_to_num(var))
    return pa.table(
        {
            "bucket_start": pa.array(grid.starts, pa.timestamp("us")).cast(
                pa.timestamp("us", "UTC")
            ),
            "observed": observed,
            "expected": expected,
            "low": np.maximum(expected - 2 * sd, 0.0),
            "high": expected + 2 * sd,
        }
    )
