"""Session conversion rates as detection metrics (setting `session_rates`).

Per hour of entry and segment: how many sessions entered (first view), carted and bought within
`session_window_minutes` of it - the session funnel contract (models/session_funnel.sql), so
`funnelpulse funnel --window 60m` shows the same counts. Sessions are the trials of a binomial,
which suits the scoring's tests better than event ratios (one view can lead to several carts).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from .. import funnel
from ..contract import UNKNOWN
from . import scoring
from .series import Series

# step: (numerator, denominator), counted in sessions
SESSION_STEPS = {
    "session_view_to_cart": ("session_carted", "sessions"),
    "session_cart_to_purchase": ("session_purchased", "session_carted"),
    "session_conversion": ("session_purchased", "sessions"),
}
SESSION_COUNTS = ("sessions", "session_carted", "session_purchased")
# The event-count step that measures the same thing (root causes break that one down).
EVENT_STEP = {
    "session_view_to_cart": "view_to_cart",
    "session_cart_to_purchase": "cart_to_purchase",
    "session_conversion": "conversion",
}
# Detection dimension -> funnel breakdown held constant (None: the whole shop).
_BREAKDOWN = {"shop": None, "brand": "brand", "price_band": "price_band"}


def rate_steps(values: dict[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    """The rate steps to score: the event rates, plus the session rates when counted."""
    steps = dict(scoring.STEPS)
    if all(name in values for name in SESSION_COUNTS):
        steps.update(SESSION_STEPS)
    return steps


def final_until(last_event: datetime, window_minutes: int) -> datetime:
    """Entry hours starting at or before this are final: every session that entered in them has
    had its whole conversion window by the last event seen. Later hours are not scored yet."""
    return last_event - timedelta(minutes=window_minutes) - timedelta(hours=1)


def add_session_counts(
    warehouse: str,
    series: Series,
    window_minutes: int,
    since: date | None = None,
    memory_mb: int | None = funnel.DEFAULT_MEMORY_MB,
) -> Series:
    """`series` with (S, T) session counts of its own segments and hours added to `values`.

    Hours whose window had not closed by the last event in silver keep 0 sessions: an unfinished
    hour would look like a drop in conversion (its late carts and purchases are still to come).
    """
    shape = (len(series.segment), len(series.hours))
    counts = {name: np.zeros(shape) for name in SESSION_COUNTS}
    if not series.segment:
        series.values.update(counts)
        return series
    row_of = {key: i for i, key in enumerate(zip(series.dimension, series.segment, strict=True))}
    with funnel.bounded_connection(warehouse, memory_mb) as con:
        con.register("silver_events", funnel.silver_dataset(warehouse))
        last = con.sql("SELECT MAX(event_time)::TIMESTAMP FROM silver_events").fetchall()[0][0]
        if last is None:
            series.values.update(counts)
            return series
        for dimension in sorted(set(series.dimension), key=list(_BREAKDOWN).index):
            spec = funnel.FunnelSpec(window_seconds=window_minutes * 60, by=_BREAKDOWN[dimension])
            table = con.sql(funnel.render(spec, since, None, grain="hour")).to_arrow_table()
            _fill(counts, table, dimension, spec.key_column, row_of, series.hours)
    cutoff = np.datetime64(_naive(final_until(last, window_minutes)), "us")
    unfinished = series.hours > cutoff
    for name in SESSION_COUNTS:
        counts[name][:, unfinished] = 0.0
    series.values.update(counts)
    return series


def _fill(
    counts: dict[str, np.ndarray],
    table: Any,
    dimension: str,
    key: str | None,
    row_of: dict[tuple[str, str], int],
    hours: np.ndarray,
) -> None:
    """Place one breakdown's hourly funnel rows into the (segment, hour) arrays."""
    import pyarrow as pa

    if table.num_rows == 0:
        return
    segments = ["all"] * table.num_rows if key is None else table.column(key).to_pylist()
    stamps = table.column("hour").cast(pa.timestamp("us")).to_numpy()
    cols = ((stamps - hours[0]) // np.timedelta64(1, "h")).astype(np.int64)
    rows = np.array(
        [row_of.get((dimension, UNKNOWN if s is None else str(s)), -1) for s in segments]
    )
    keep = (rows >= 0) & (cols >= 0) & (cols < len(hours))
    for name, column in zip(SESSION_COUNTS, ("sessions", "carted", "purchased"), strict=True):
        values = table.column(column).to_numpy(zero_copy_only=False).astype(float)
        np.add.at(counts[name], (rows[keep], cols[keep]), values[keep])


def _naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None) if value.tzinfo else value
