"""The `seasonal` method (the default): trailing same-hour baselines, an overdispersed binomial
scan per funnel step over windows of 1-24 hours, and a separate traffic score. Batch `detect` and
the stream's live alerts both score with it, so they agree on what an incident is.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ..config import Settings
from ..contract import anomaly_id
from . import scoring
from .incidents import evidence_span
from .series import Series
from .session_rates import rate_steps

MIN_REL_CHANGE = 0.25
MIN_TRAFFIC_CHANGE = 0.3
MIN_CARTS = 20
# Scored from hour `lo`, a row is exact from this many hours after it: its baselines' trailing
# dispersion (a week), the 24-hour windows over them, and the day before (a firing that ended
# up to a day earlier decides what a row counts, and traffic firings in its window exclude it).
EXACT_AFTER_H = scoring.DISPERSION_HOURS + 24 + 48
# ...and its windows are scanned from this many hours before it (the firings of the day before,
# and the traffic firings inside their windows).
SCAN_BACK_H = 24 + 48


def _tail(base: Any, k: int) -> Any:
    """A baseline without its first `k` hours."""
    if not k:
        return base
    return replace(
        base,
        **{
            f.name: getattr(base, f.name)[:, k:]
            for f in fields(base)
            if getattr(base, f.name) is not None
        },
    )


def seasonal(series: Series, settings: Settings, scored_from: int = 0) -> list[dict[str, Any]]:
    """Scan windows of 1-24 hours ending at every hour, for traffic and each funnel step.

    With `scored_from`, the rows ending at or after that hour index are those of scoring it all;
    the hours before are read only as the history those rows need (rows ending before them may
    be missing or differ: callers drop them).
    """
    if not series.segment:
        return []
    full = series.values
    history = settings.history_days
    windows = scoring.WINDOWS
    steps = rate_steps(full)  # the event rates, and the session rates when the series has them
    alpha = scoring.per_test_alpha(
        settings.false_alarms_per_week, len(series.segment), 1 + len(steps), len(windows)
    )
    now = datetime.now(UTC)
    found: list[dict[str, Any]] = []
    # Baselines of the hours from `lo` (their trailing week of dispersion, and what the windows
    # and firings before `scored_from` need); scans from `cut` hours later.
    lo = max(scored_from - EXACT_AFTER_H, 0)
    cut = max(scored_from - SCAN_BACK_H, 0) - lo

    growth = scoring.daily_growth(
        full["views"][[0]] if series.dimension[0] == "shop" else full["views"], history, lo
    )
    traffic = _tail(scoring.count_baseline(full["views"], history, trend=growth, lo=lo), cut)
    bases = {
        step: _tail(scoring.rate_baseline(full[num], full[den], history, lo=lo), cut)
        for step, (num, den) in steps.items()
    }
    conv = bases["conversion"]
    with np.errstate(invalid="ignore", divide="ignore"):
        aov_hist = scoring.past_same_hour(full["revenue"], history, lo + cut)
        buys_hist = scoring.past_same_hour(full["purchases"], history, lo + cut)
        aov = np.nansum(aov_hist, axis=-1) / np.nansum(buys_hist, axis=-1)
    aov = np.where(np.isfinite(aov), aov, 0.0)
    # Everything after the baselines works on the scanned hours.
    start = lo + cut
    series = Series(
        series.hours[start:],
        series.dimension,
        series.segment,
        {k: x[:, start:] for k, x in full.items()},
    )
    v = series.values
    traffic_scan = scoring.scan_count(
        v["views"],
        traffic,
        alpha=alpha,
        min_change=MIN_TRAFFIC_CHANGE,
        min_expected=settings.min_views,
        windows=windows,
    )
    # Purchases lost in each hour, per step; an incident's loss sums hours, each counted once.
    lost_views = np.nan_to_num(traffic.expected - v["views"])
    losses = {"traffic": lost_views * np.nan_to_num(conv.expected)}
    scans = {"traffic": traffic_scan}
    # Per hour: observed and expected of each step, to find the hours a firing window's evidence is in.
    per_hour = {"traffic": (v["views"], traffic.expected, MIN_TRAFFIC_CHANGE)}
    for step, (num_name, den_name) in steps.items():
        num, den = v[num_name], v[den_name]
        base = bases[step]
        scans[step] = scoring.scan_rate(
            num,
            den,
            base,
            alpha=alpha,
            min_change=MIN_REL_CHANGE,
            min_trials=settings.min_views if den_name in ("views", "sessions") else MIN_CARTS,
            windows=windows,
        )
        losses[step] = np.nan_to_num(den * base.expected - num)
        per_hour[step] = (num, den * base.expected, MIN_REL_CHANGE)
    # A lost cart is a lost purchase only at the rate carts go on to be bought.
    for step, then in (
        ("view_to_cart", "cart_to_purchase"),
        ("session_view_to_cart", "session_cart_to_purchase"),
    ):
        if step in losses:
            losses[step] = losses[step] * np.nan_to_num(bases[then].expected)
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
            observed, expected, change = per_hour[step]
            a, b = evidence_span(
                observed[s, t - k + 1 : t + 1],
                expected[s, t - k + 1 : t + 1],
                scan.sign[s, t],
                change,
            )
            found[-1]["evidence_start"] = _utc(series.hours[t - k + 1 + a])
            found[-1]["evidence_end"] = _utc(series.hours[t - k + 1 + b]) + timedelta(hours=1)
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


def _utc(hour: np.datetime64) -> datetime:
    return hour.astype(datetime).replace(tzinfo=UTC)
