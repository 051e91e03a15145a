"""`funnelpulse detect`: score every segment-hour and write the anomalies table.

Methods: `seasonal` (default; trailing same-hour baselines, overdispersed binomial z per funnel
step, a separate traffic score) and `reference` (the original project's all-history z-score,
reproduced for comparison only).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from .. import tables
from ..config import Settings
from ..console import Progress, SilentProgress
from ..engines import engine_for
from ..engines.duckdb_conn import connect
from ..errors import ConfigError, WarehouseError
from . import scoring
from .rootcause import Cube, explain
from .series import Series, build_series

METHODS = ("seasonal", "reference")
MIN_REL_CHANGE = 0.25
MIN_TRAFFIC_CHANGE = 0.3
MIN_CARTS = 20

ANOMALY_SCHEMA = pa.schema(
    [
        ("anomaly_id", pa.string()),
        ("method", pa.string()),
        ("window_start", pa.timestamp("us", "UTC")),
        ("window_end", pa.timestamp("us", "UTC")),
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
        ("detected_at", pa.timestamp("us", "UTC")),
        ("window_date", pa.date32()),
        ("window_hours", pa.int64()),
    ]
)


@dataclass
class DetectResult:
    method: str
    anomalies: pa.Table
    segments: int
    hours: int


def anomaly_id(
    method: str, dimension: str, segment: str, step: str, start: datetime, hours: int = 1
) -> str:
    key = f"{method}|{dimension}|{segment}|{step}|{start.isoformat()}"
    key += f"|{hours}h" if hours != 1 else ""
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


def detect(
    warehouse: str,
    settings: Settings,
    method: str | None = None,
    since: date | None = None,
    progress: Progress | None = None,
    write: bool = True,
    engine: str = "duckdb",
) -> DetectResult:
    """Score every segment-hour. With engine "spark" the heavy step, silver -> hourly segment
    cube, runs on Spark (the cluster); scoring the cube is small and runs here either way."""
    progress = progress or SilentProgress()
    method = method or settings.detect_method
    if method not in METHODS:
        raise ConfigError(f"Unknown method {method!r}. Use one of: {', '.join(METHODS)}")
    silver = tables.table_path(warehouse, tables.SILVER)
    if not tables.exists(silver):
        raise WarehouseError(f"No silver_events in {warehouse}. Run `funnelpulse build` first")
    # Baselines look back history_days; dispersion averages the trailing week of those comparisons.
    lookback = settings.history_days + scoring.DISPERSION_HOURS // 24 + 1
    first = since - timedelta(days=lookback) if since else None
    con = connect()
    try:
        progress.step("Aggregating hourly segments")
        engine_for(engine, settings).load_cube(con, silver, first, progress)
        series = build_series(con, min_total_views=settings.min_views * 10)
        progress.step(f"Scoring ({method})")
        rows = _reference(warehouse, con) if method == "reference" else seasonal(series, settings)
        if since:
            cutoff = datetime(since.year, since.month, since.day, tzinfo=UTC)
            rows = [r for r in rows if r["window_start"] >= cutoff]
        if rows and method == "seasonal" and write:
            progress.step(f"Explaining {len(rows):,} anomalies")
            cube = Cube(*_cube_columns(con))
            for r in rows:
                opened = np.datetime64(r["window_start"].replace(tzinfo=None), "us")
                window = opened + np.arange(r["window_hours"]) * np.timedelta64(1, "h")
                r["root_cause"] = json.dumps(
                    explain(
                        cube, window, settings.history_days, r["dimension"], r["segment"], r["step"]
                    ),
                    default=float,
                )
    finally:
        con.close()
    table = pa.Table.from_pylist(rows, schema=ANOMALY_SCHEMA)
    if write:
        progress.step("Writing anomalies")
        replace = None
        if since:
            dates = {r["window_date"].isoformat() for r in rows}
            last = series.hours[-1].astype(datetime).date() if len(series.hours) else since
            days = (last - since).days + 1
            dates |= {(since + timedelta(d)).isoformat() for d in range(max(days, 0))}
            replace = tables.Partitions("window_date", frozenset(dates))
        tables.write(
            tables.table_path(warehouse, tables.ANOMALIES),
            table,
            partition_by=["window_date"],
            replace=replace,
        )
    return DetectResult(method, table, len(series.segment), len(series.hours))


def _cube_columns(con) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:  # type: ignore[no-untyped-def]
    """The cube as numpy columns, its text labels as integer codes plus their names."""
    t = con.sql(
        "SELECT hour, brand, price_band, category_root, views, carts, purchases FROM cube"
    ).to_arrow_table()
    out: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    for name in ("brand", "price_band", "category_root"):
        coded = t.column(name).fill_null("(none)").combine_chunks().dictionary_encode()
        out[name] = coded.indices.to_numpy(zero_copy_only=False)
        names[name] = [str(x) for x in coded.dictionary.to_pylist()]
    for name in ("views", "carts", "purchases"):
        out[name] = t.column(name).to_numpy()
    out["hour"] = t.column("hour").cast(pa.timestamp("us")).to_numpy()
    return out, names


def seasonal(series: Series, settings: Settings) -> list[dict[str, Any]]:
    """Scan windows of 1-24 hours ending at every hour, for traffic and each funnel step."""
    if not series.segment:
        return []
    v = series.values
    history = settings.history_days
    windows = scoring.WINDOWS
    alpha = scoring.per_test_alpha(
        settings.false_alarms_per_week, len(series.segment), 1 + len(scoring.STEPS), len(windows)
    )
    now = datetime.now(UTC)
    found: list[dict[str, Any]] = []

    traffic = scoring.count_baseline(v["views"], history)
    traffic_scan = scoring.scan_count(
        v["views"],
        traffic,
        alpha=alpha,
        min_change=MIN_TRAFFIC_CHANGE,
        min_expected=settings.min_views,
        windows=windows,
    )
    conv = scoring.rate_baseline(v["purchases"], v["views"], history)
    c2p = scoring.rate_baseline(v["purchases"], v["carts"], history)
    with np.errstate(invalid="ignore", divide="ignore"):
        aov_hist = scoring.past_same_hour(v["revenue"], history)
        buys_hist = scoring.past_same_hour(v["purchases"], history)
        aov = np.nansum(aov_hist, axis=-1) / np.nansum(buys_hist, axis=-1)
    aov = np.where(np.isfinite(aov), aov, 0.0)
    follow = np.nan_to_num(c2p.expected)
    # Purchases lost in each hour, per step; an incident's loss sums hours, each counted once.
    lost_views = np.nan_to_num(traffic.expected - v["views"])
    losses = {"traffic": lost_views * np.nan_to_num(conv.expected)}
    scans = {"traffic": traffic_scan}
    for step, (num_name, den_name) in scoring.STEPS.items():
        num, den = v[num_name], v[den_name]
        base = {"conversion": conv, "cart_to_purchase": c2p}.get(step) or scoring.rate_baseline(
            num, den, history
        )
        scans[step] = scoring.scan_rate(
            num,
            den,
            base,
            alpha=alpha,
            min_change=MIN_REL_CHANGE,
            min_trials=settings.min_views if den_name == "views" else MIN_CARTS,
            windows=windows,
        )
        lost = np.nan_to_num(den * base.expected - num)
        losses[step] = lost * follow if step == "view_to_cart" else lost
    # A rate that moves only because its denominator collapsed or jumped is the traffic incident:
    # a rate window holding an hour where traffic fired is that incident, not another (a tracking
    # outage lifts view->cart for every window that spans it, hours after it ends). Only hours up
    # to the window's end count, so a later hour never changes an earlier row.
    traffic_c = scoring._cumsum0(traffic_scan.fired.astype(float))
    for step, scan in scans.items():
        lost_c = scoring._cumsum0(losses[step])
        revenue_c = scoring._cumsum0(losses[step] * aov)
        covered: dict[int, int] = {}
        for s, t in sorted(
            zip(*np.nonzero(scan.fired), strict=True), key=lambda st: (st[0], st[1])
        ):
            k = int(scan.window[s, t])
            if step != "traffic" and traffic_c[s, t + 1] - traffic_c[s, t - k + 1] > 0:
                continue
            first = max(t - k + 1, covered.get(s, -1) + 1)
            covered[s] = t
            found.append(
                _row(
                    series,
                    s,
                    t,
                    k,
                    step,
                    scan,
                    now,
                    lost_c[s, t + 1] - lost_c[s, first],
                    revenue_c[s, t + 1] - revenue_c[s, first],
                )
            )
    return found


def _row(
    series: Series,
    s: int,
    t: int,
    k: int,
    step: str,
    scan: scoring.Scan,
    now: datetime,
    lost_purchases: float,
    lost_revenue: float,
) -> dict[str, Any]:
    """One anomaly row: the window of k hours ending at hour t that fired for segment s."""
    start = series.hours[t - k + 1].astype(datetime).replace(tzinfo=UTC)
    end = series.hours[t].astype(datetime).replace(tzinfo=UTC) + timedelta(hours=1)
    obs, exp, trials = scan.observed[s, t], scan.expected[s, t], scan.trials[s, t]
    drop = scan.sign[s, t] < 0
    if step == "traffic":
        kind = "traffic_drop" if drop else "traffic_spike"
        observed_rate, expected_rate, denominator = obs, exp, None
    else:
        kind = "drop" if drop else "spike"
        observed_rate, expected_rate, denominator = obs / trials, exp / trials, int(trials)
    z = float(scan.z[s, t])
    return {
        "anomaly_id": anomaly_id(
            "seasonal", series.dimension[s], series.segment[s], step, start, k
        ),
        "method": "seasonal",
        "window_start": start,
        "window_end": end,
        "dimension": series.dimension[s],
        "segment": series.segment[s],
        "step": step,
        "type": kind,
        "observed_rate": float(observed_rate),
        "expected_rate": float(expected_rate),
        "numerator": int(obs),
        "denominator": denominator,
        "z": z,
        "p_value": float(scan.p[s, t]),
        "severity": str(scoring.severity(z)),
        "lost_purchases": float(lost_purchases),
        "lost_revenue": float(lost_revenue),
        "root_cause": None,
        "detected_at": now,
        "window_date": start.date(),
        "window_hours": k,
    }


REFERENCE_SQL = """
WITH base AS (
    SELECT *, hour(window_start) AS hour_of_day
    FROM gold WHERE views >= 20 AND brand IS NOT NULL
), stats AS (
    SELECT *,
        avg(conversion_rate) OVER (PARTITION BY brand) AS m_b,
        stddev_samp(conversion_rate) OVER (PARTITION BY brand) AS s_b,
        avg(conversion_rate) OVER (PARTITION BY brand, hour_of_day) AS m_bh,
        stddev_samp(conversion_rate) OVER (PARTITION BY brand, hour_of_day) AS s_bh
    FROM base
), scored AS (
    SELECT *,
        CASE WHEN s_b IS NULL OR s_b = 0 THEN 0.0 ELSE (conversion_rate - m_b) / s_b END AS z_b,
        CASE WHEN s_bh IS NULL OR s_bh = 0 THEN 0.0 ELSE (conversion_rate - m_bh) / s_bh END AS z_bh
    FROM stats
)
SELECT brand, window_start::TIMESTAMP AS window_start, views, purchases, conversion_rate, m_b, m_bh, z_b, z_bh,
    CASE WHEN views >= 50 AND (z_b <= -2.0 OR z_bh <= -2.0) THEN 'drop'
         WHEN views >= 50 AND (z_b >= 2.0 OR z_bh >= 2.0) THEN 'spike' END AS kind
FROM scored
WHERE views >= 50 AND (z_b <= -2.0 OR z_bh <= -2.0 OR z_b >= 2.0 OR z_bh >= 2.0)
"""


def _reference(warehouse: str, con) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The original project's z-score (reference-behaviour section 6), in UTC hours."""
    gold = tables.table_path(warehouse, tables.GOLD_HOURLY_BRAND)
    if not tables.exists(gold):
        raise WarehouseError(
            f"No gold_funnel_hourly_brand in {warehouse}. Run `funnelpulse build` first"
        )
    con.register("gold", tables.dataset(gold))
    now = datetime.now(UTC)
    rows = []
    for brand, start, views, purchases, rate, m_b, m_bh, z_b, z_bh, kind in con.sql(
        REFERENCE_SQL
    ).fetchall():
        start = start.replace(tzinfo=UTC)
        # The reference flags on whichever baseline crosses; report that baseline.
        use_hour = (z_bh <= -2.0) if kind == "drop" else (z_bh >= 2.0)
        z = z_bh if use_hour else z_b
        expected = m_bh if use_hour else m_b
        rows.append(
            {
                "anomaly_id": anomaly_id("reference", "brand", brand, "conversion", start),
                "method": "reference",
                "window_start": start,
                "window_end": start + timedelta(hours=1),
                "dimension": "brand",
                "segment": brand,
                "step": "conversion",
                "type": kind,
                "observed_rate": rate,
                "expected_rate": expected,
                "numerator": purchases,
                "denominator": views,
                "z": z,
                "p_value": float(scoring.p_value(np.array(z))),
                "severity": str(scoring.severity(z)),
                "lost_purchases": (expected - rate) * views,
                "lost_revenue": None,
                "root_cause": None,
                "detected_at": now,
                "window_date": start.date(),
                "window_hours": 1,
            }
        )
    return rows
