"""Hours detection must not judge: coverage gaps (no event at all, shop-wide: the warehouse never
received them) and annotated hours (known events, see annotations.py).

Both are blanked (NaN) in the hourly series before scoring: a window holding such an hour never
fires, and no later baseline uses it. No data is not a traffic drop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from .series import Series


@dataclass(frozen=True)
class Blank:
    """Hours [start, end) of one segment (`dimension:value`), or of every segment when None."""

    start: datetime
    end: datetime
    segment: str | None = None


def gap_mask(series: Series) -> np.ndarray:
    """(T,) True for the hours with no view, cart or purchase anywhere in the shop."""
    if not len(series.hours):
        return np.zeros(0, bool)
    total = sum(
        np.nan_to_num(series.values[m]).sum(axis=0) for m in ("views", "carts", "purchases")
    )
    return np.asarray(total == 0)


def gap_spans(hours: np.ndarray, mask: np.ndarray) -> list[tuple[datetime, datetime]]:
    """Consecutive masked hours as [start, end) spans in UTC."""
    spans: list[tuple[datetime, datetime]] = []
    one = np.timedelta64(1, "h")
    for i in np.flatnonzero(mask):
        start = _utc(hours[i])
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], _utc(hours[i] + one))
        else:
            spans.append((start, _utc(hours[i] + one)))
    return spans


def blank(series: Series, blanks: Iterable[Blank] = (), gaps: bool = True) -> Series:
    """`series` with coverage gaps (when `gaps`) and the `blanks` set to NaN in every metric."""
    if not len(series.hours):
        return series
    keys = [f"{d}:{s}" for d, s in zip(series.dimension, series.segment, strict=True)]
    mask = np.zeros((len(keys), len(series.hours)), bool)
    if gaps:
        mask[:, gap_mask(series)] = True
    for b in blanks:
        lo = np.datetime64(b.start.astimezone(UTC).replace(tzinfo=None), "us")
        hi = np.datetime64(b.end.astimezone(UTC).replace(tzinfo=None), "us")
        # an hour is blanked when any part of it lies inside the span
        cols = (series.hours + np.timedelta64(1, "h") > lo) & (series.hours < hi)
        rows = np.array([b.segment in (None, "shop:all", k) for k in keys], dtype=bool)
        mask[np.ix_(rows, cols)] = True
    if not mask.any():
        return series
    values = {}
    for name, v in series.values.items():
        out = v.astype(float, copy=True)
        out[mask] = np.nan
        values[name] = out
    return Series(series.hours, series.dimension, series.segment, values)


def _utc(hour: np.datetime64) -> datetime:
    return hour.astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC)
