"""Dense arrays for open-window scoring, read from the warehouse: the live buckets and
the hourly history (batch gold, and the live buckets rolled up to hours where batch gold ends)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from .. import tables
from ..localdb import connect
from ..streaming.buckets import METRICS, UNKNOWN, aggregate, read_buckets
from .fragments import fragment_exponents
from .open_window import (
    WINDOW_MINUTES,
    HourlyHistory,
    LiveGrid,
    dispersion_by_scale,
    window_buckets,
)

Key = tuple[str, str]
DISPERSION_DAYS = 7  # past days whose buckets measure how clustered events are
_dispersion_cache: dict[tuple[str, date, int, tuple[Key, ...], bool], dict[Any, np.ndarray]] = {}


def _gold(warehouse: str, name: str, since: date | None = None) -> pa.Table | None:
    path = tables.table_path(warehouse, name)
    if not tables.exists(path):
        return None
    flt = ds.field("window_date") >= since if since else None
    return tables.dataset(path).to_table(filter=flt)


def segment_keys(warehouse: str, min_hourly_views: float, days: int = 14) -> list[Key]:
    """The shop, every price band, and the brands averaging at least `min_hourly_views` views an
    hour over the last `days` days of batch gold (smaller brands are too thin to judge in minutes)."""
    brand = _gold(warehouse, tables.GOLD_HOURLY_BRAND)
    keys: list[Key] = [("shop", "all")]
    if brand is None or brand.num_rows == 0:
        return keys
    band = _gold(warehouse, tables.GOLD_HOURLY_PRICE_BAND)
    con = connect()
    try:
        con.register("brand_rows", brand)
        rows = con.sql(
            f"""
            WITH recent AS (
                SELECT * FROM brand_rows
                WHERE window_start > (SELECT max(window_start) FROM brand_rows) - INTERVAL {int(days)} DAY
            ), hours AS (SELECT count(DISTINCT window_start) AS n FROM recent)
            SELECT coalesce(brand, '{UNKNOWN}') AS segment
            FROM recent GROUP BY 1
            HAVING SUM(views) / (SELECT n FROM hours) >= {float(min_hourly_views)}
            ORDER BY SUM(views) DESC
            """
        ).to_arrow_table()
        keys += [("brand", s) for s in rows.column("segment").to_pylist()]
        if band is not None:
            con.register("band_rows", band)
            bands = con.sql(
                f"SELECT DISTINCT coalesce(price_band, '{UNKNOWN}') AS b FROM band_rows ORDER BY 1"
            ).to_arrow_table()
            keys += [("price_band", b) for b in bands.column("b").to_pylist()]
    finally:
        con.close()
    return keys


def _hour(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def _np(value: datetime) -> np.datetime64:
    return np.datetime64(value.astimezone(UTC).replace(tzinfo=None), "us")


def _dense(
    long: pa.Table, time_col: str, axis: np.ndarray, keys: list[Key]
) -> dict[str, np.ndarray]:
    """Long rows (time, dimension, segment, metrics) -> metric arrays (S, len(axis)), 0 if absent."""
    index = {k: i for i, k in enumerate(keys)}
    out = {m: np.zeros((len(keys), len(axis))) for m in METRICS}
    if long.num_rows == 0 or len(axis) == 0:
        return out
    times = long.column(time_col).cast(pa.timestamp("us")).to_numpy()
    step = axis[1] - axis[0] if len(axis) > 1 else np.timedelta64(1, "h")
    cols = ((times - axis[0]) // step).astype(np.int64)
    pairs = zip(
        long.column("dimension").to_pylist(), long.column("segment").to_pylist(), strict=True
    )
    rows = np.array([index.get(k, -1) for k in pairs], dtype=np.int64)
    ok = (rows >= 0) & (cols >= 0) & (cols < len(axis))
    for m in METRICS:
        values = long.column(m).to_numpy(zero_copy_only=False).astype(float)
        np.add.at(out[m], (rows[ok], cols[ok]), values[ok])
    return out


def load_grid(
    warehouse: str, first: datetime, newest: datetime, bucket_minutes: int, keys: list[Key]
) -> LiveGrid | None:
    """Live buckets from `first` to the bucket starting at `newest`, dense (0 = no event)."""
    live = read_buckets(warehouse, since=first)
    live = live.filter(
        pc.less_equal(live.column("bucket_start"), pa.scalar(newest, pa.timestamp("us", "UTC")))
    )
    if live.num_rows == 0:
        return None
    start = max(first, min(live.column("bucket_start").to_pylist()))
    count = int((newest - start) / timedelta(minutes=bucket_minutes)) + 1
    if count <= 0:
        return None
    starts = _np(start) + np.arange(count) * np.timedelta64(bucket_minutes, "m")
    values = _dense(live, "bucket_start", starts, keys)
    return LiveGrid(starts=starts, bucket_minutes=bucket_minutes, keys=keys, values=values)


def load_history(
    warehouse: str,
    first: datetime,
    last: datetime,
    keys: list[Key],
    grid: LiveGrid | None = None,
    fragments: bool = False,
) -> HourlyHistory:
    """Hourly counts from `first` to `last` (hours): batch gold where it has the hour, else the
    live buckets rolled up; NaN for hours neither covers. With `grid`, the clustering measured
    on the week before each of its days (and with `fragments`, the sessions' parts too)."""
    first_h, last_h = _hour(first), _hour(last)
    hours = _np(first_h) + np.arange(
        int((last_h - first_h) / timedelta(hours=1)) + 1
    ) * np.timedelta64(1, "h")
    values = {m: np.full((len(keys), len(hours)), np.nan) for m in METRICS}
    brand = _gold(warehouse, tables.GOLD_HOURLY_BRAND, first_h.date())
    band = _gold(warehouse, tables.GOLD_HOURLY_PRICE_BAND, first_h.date())
    live = read_buckets(warehouse, since=first_h)
    con = connect()
    try:
        sums = ", ".join(f"SUM({m}) AS {m}" for m in METRICS)
        batch_end = None
        if brand is not None and brand.num_rows:
            con.register("brand_rows", brand)
            parts = [
                f"SELECT window_start AS hour, 'shop' AS dimension, 'all' AS segment, {sums} FROM brand_rows GROUP BY 1",
                f"SELECT window_start, 'brand', coalesce(brand, '{UNKNOWN}'), {sums} FROM brand_rows GROUP BY 1, 3",
            ]
            if band is not None and band.num_rows:
                con.register("band_rows", band)
                parts.append(
                    f"SELECT window_start, 'price_band', coalesce(price_band, '{UNKNOWN}'), {sums} FROM band_rows GROUP BY 1, 3"
                )
            batch = con.sql(" UNION ALL ".join(parts)).to_arrow_table()
            span = con.sql(
                "SELECT min(window_start), max(window_start) FROM brand_rows"
            ).fetchall()[0]
            batch_start, batch_end = (_np(x) for x in span)
            dense = _dense(batch, "hour", hours, keys)
            covered = (hours >= batch_start) & (hours <= batch_end)
            for m in METRICS:
                values[m][:, covered] = dense[m][:, covered]
        if live.num_rows:
            con.register("live_rows", live)
            rolled = con.sql(
                f"SELECT date_trunc('hour', bucket_start) AS hour, dimension, segment, {sums} FROM live_rows GROUP BY ALL"
            ).to_arrow_table()
            span = con.sql("SELECT min(bucket_start), max(bucket_start) FROM live_rows").fetchall()[
                0
            ]
            live_start = _np(_hour(span[0]))
            dense = _dense(rolled, "hour", hours, keys)
            covered = (hours >= live_start) & (hours <= _np(_hour(span[1])))
            if batch_end is not None:
                covered &= hours > batch_end
            for m in METRICS:
                values[m][:, covered] = dense[m][:, covered]
    finally:
        con.close()
    found = grid_dispersion(warehouse, grid, fragments) if grid is not None else {}
    return HourlyHistory(
        hours=hours,
        values=values,
        dispersion={k: v for k, v in found.items() if isinstance(k, str)},
        scaled={k: v for k, v in found.items() if isinstance(k, tuple) and len(k) == 2},
        fragments={k[1:]: v for k, v in found.items() if isinstance(k, tuple) and len(k) == 3},
    )


def _past_buckets(warehouse: str, day: date, bucket_minutes: int) -> pa.Table:
    """Buckets of the DISPERSION_DAYS days before `day`: from silver, else from the live table."""
    first = day - timedelta(days=DISPERSION_DAYS)
    silver = tables.table_path(warehouse, tables.SILVER)
    if tables.exists(silver):
        events = tables.dataset(silver).to_table(
            columns=["event_time", "event_type", "brand_norm", "price_band", "price"],
            filter=(ds.field("event_date") >= first) & (ds.field("event_date") < day),
        )
        if events.num_rows:
            return aggregate(events, bucket_minutes)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    live = read_buckets(warehouse, since=since)
    end = pa.scalar(datetime(day.year, day.month, day.day, tzinfo=UTC), pa.timestamp("us", "UTC"))
    return live.filter(pc.less(live.column("bucket_start"), end))


FRAGMENT_METRICS = {"views": "view", "carts": "cart", "purchases": "purchase"}


def _fragments_for(
    warehouse: str, day: date, keys: list[Key], bucket_minutes: int
) -> dict[Any, np.ndarray]:
    """("fragments", metric, b) -> (S, len(THETAS)): the Laplace exponent of a session's
    events of the metric within a block of b buckets, for every window length b, measured on
    the DISPERSION_DAYS days of silver before `day` (none without silver: the live table has
    no sessions)."""
    silver = tables.table_path(warehouse, tables.SILVER)
    if not tables.exists(silver):
        return {}
    first = day - timedelta(days=DISPERSION_DAYS)
    events = tables.dataset(silver).to_table(
        columns=["event_time", "event_type", "brand_norm", "price_band", "user_session"],
        filter=(ds.field("event_date") >= first)
        & (ds.field("event_date") < day)
        & ds.field("event_type").isin(list(FRAGMENT_METRICS.values())),
    )
    if events.num_rows == 0:
        return {}
    index = {k: i for i, k in enumerate(keys)}
    seconds = events.column("event_time").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
    seconds = seconds // 1_000_000
    session = (
        pc.dictionary_encode(pc.fill_null(events.column("user_session"), ""))
        .combine_chunks()
        .indices.to_numpy()
    )
    kind = events.column("event_type").to_numpy(zero_copy_only=False)
    brand = pc.fill_null(events.column("brand_norm"), UNKNOWN).to_pylist()
    band = pc.fill_null(events.column("price_band"), UNKNOWN).to_pylist()
    by_dim = {
        "shop": np.full(len(kind), index.get(("shop", "all"), -1)),
        "brand": np.array([index.get(("brand", b), -1) for b in brand], dtype=np.int64),
        "price_band": np.array([index.get(("price_band", b), -1) for b in band], dtype=np.int64),
    }
    out: dict[Any, np.ndarray] = {}
    for b in window_buckets(WINDOW_MINUTES, bucket_minutes):
        block = seconds // (b * bucket_minutes * 60)
        for metric, event_type in FRAGMENT_METRICS.items():
            mask = kind == event_type
            parts = [
                fragment_exponents(seg[mask], session[mask], block[mask], len(keys))
                for seg in by_dim.values()
            ]
            # every key belongs to one dimension: each row is measured by one part, NaN in others
            out[("fragments", metric, b)] = np.fmax.reduce(parts)
    return out


def dispersion_for(
    warehouse: str, day: date, keys: list[Key], bucket_minutes: int, fragments: bool = False
) -> dict[Any, np.ndarray]:
    """Per step, (S,) variance inflation of buckets on the week before `day` (cached per day),
    and per (step, b) the inflation of sums of b buckets, b up to half an hour (never below a
    smaller scale's: clustering adds variance as the window grows to a basket's span)."""
    cache_key = (warehouse, day, bucket_minutes, tuple(keys), fragments)
    if cache_key in _dispersion_cache:
        return _dispersion_cache[cache_key]
    past = _past_buckets(warehouse, day, bucket_minutes)
    first = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=DISPERSION_DAYS)
    count = DISPERSION_DAYS * 24 * 60 // bucket_minutes
    axis = _np(first) + np.arange(count) * np.timedelta64(bucket_minutes, "m")
    values = _dense(past, "bucket_start", axis, keys)
    per_hour = 60 // bucket_minutes
    single, scaled = dispersion_by_scale(values, per_hour)
    out: dict[Any, np.ndarray] = {**single, **scaled}
    if fragments:
        out.update(_fragments_for(warehouse, day, keys, bucket_minutes))
    if len(_dispersion_cache) > 64:
        _dispersion_cache.clear()
    _dispersion_cache[cache_key] = out
    return out


def grid_dispersion(
    warehouse: str, grid: LiveGrid, fragments: bool = False
) -> dict[Any, np.ndarray]:
    """(S, B) per step (and per (step, scale)): each bucket gets the dispersion measured on the
    week before its day."""
    days = grid.starts.astype("datetime64[D]")
    out: dict[Any, np.ndarray] = {}
    for day in np.unique(days):
        as_date = day.astype(date)
        found = dispersion_for(warehouse, as_date, grid.keys, grid.bucket_minutes, fragments)
        cols = days == day
        for key, phi in found.items():
            if key not in out:
                shape = (len(grid.keys), len(grid.starts), *phi.shape[1:])
                out[key] = np.full(shape, np.nan) if phi.ndim > 1 else np.ones(shape)
            out[key][:, cols] = phi[:, None]
    return out
