"""Scoring the open window: live buckets (2 minutes by default) against the same time of day on past days.

Pure functions over dense arrays shaped (segments, buckets). Every bucket's expectation comes
from the same hour on past days (the hourly history: batch gold, plus live buckets rolled up to
hours), scaled by the fraction of the hour the bucket covers, so a partial hour is compared with
a partial-hour expectation, never a whole hour. Windows of 5, 15, 30, 60 minutes and longer end
at each bucket; a window's score uses only its own buckets and hours at least a day before its
last bucket, so adding later buckets never changes an earlier score (no look-ahead).

The statistics are batch detection's (anomaly/scoring.py): exact binomial tails with a
beta-binomial design effect for rates, negative-binomial tails for counts. False alarms are
controlled by a per-test alpha derived from a target number of false alerts per day (Bonferroni
over segments x steps x windows x buckets per day x directions; live alerts score drops only).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from .fragments import THETAS, compound_lower_tail
from .scoring import count_tails, rate_tails, severity, window_sum, z_of

# Window lengths, minutes, each rounded to whole buckets (at least one): with the default 2-minute
# buckets 2, 6, 10, 16, 30...; with 5-minute buckets 5, 10, 15, 30... The newest bucket alone
# catches a break at high volume; the 10-minute window one at ~2.4 purchases a minute, where a
# single 5-minute bucket holds just too little evidence (benchmark: BENCHMARKS.md).
WINDOW_MINUTES = (1, 6, 10, 16, 30, 60, 120, 240)
# step: (numerator, denominator); denominator None = a count compared with its expected count
STEPS: dict[str, tuple[str, str | None]] = {
    "traffic": ("views", None),
    "view_to_cart": ("carts", "views"),
    "cart_to_purchase": ("purchases", "carts"),
    # purchases as a count too: within a bucket they follow carts of earlier buckets, so their
    # share of the bucket's carts varies ~1/(1 - rate) more than a binomial; the count does not
    "purchases": ("purchases", None),
}
PRIOR_WEIGHT = 10.0  # pseudo-trials of the segment's all-hours rate in every rate baseline
MIN_CV = 0.1  # counts vary within an hour and from day to day at least this much (relative)
RECENT_MINUTES = 15  # a firing window's newest quarter (>= this) must still move its way


@dataclass(frozen=True)
class LiveGrid:
    """Live buckets, dense: every segment has a value (0 if no event) for every bucket."""

    starts: np.ndarray  # datetime64[us], (B,), consecutive buckets
    bucket_minutes: int
    keys: list[tuple[str, str]]  # (dimension, segment), (S,)
    values: dict[str, np.ndarray]  # views, carts, purchases, revenue -> (S, B)


@dataclass(frozen=True)
class HourlyHistory:
    """Hourly counts per segment (same keys and order as the grid); NaN where unknown.

    `dispersion`: per step, how much more a bucket's count (or rate) varies than independent
    events would, measured on past days at the bucket size (events come in sessions and
    baskets); an array broadcastable to (S, B), 1 where unknown.
    `scaled`: the same at a coarser scale, (step, b) -> inflation of sums of b consecutive
    buckets. A basket's events spread over minutes, so a sum over a longer window varies more
    than a single bucket does (up to ~ the mean basket size); a window of k buckets is tested
    with the inflation measured at the largest measured scale <= k.
    """

    hours: np.ndarray  # datetime64[us], (H,), consecutive hours
    values: dict[str, np.ndarray]  # views, carts, purchases, revenue -> (S, H)
    dispersion: dict[str, np.ndarray] = field(default_factory=dict)
    scaled: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    # (metric, b) -> (S, B, len(THETAS)): the Laplace exponent of the metric's fragments (a
    # session's events within b buckets) measured on past days (anomaly/fragments.py)
    fragments: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def inflation(self, step: str, k: int) -> np.ndarray:
        """Variance inflation for a window of k buckets: the scale nearest below k measured."""
        scales = [b for (name, b) in self.scaled if name == step and b <= k]
        if scales:
            return self.scaled[(step, max(scales))]
        return self.dispersion.get(step, np.ones((1, 1)))

    def fragment_exponent(self, metric: str, k: int) -> np.ndarray | None:
        """The fragments' exponent for a window of k buckets, measured at the nearest length
        >= k (longer fragments are larger, so their bound is weaker, never stronger); None if
        no such length was measured."""
        scales = [b for (name, b) in self.fragments if name == metric and b >= k]
        return self.fragments[(metric, min(scales))] if scales else None


@dataclass(frozen=True)
class Options:
    """What counts as an alert: target false alerts per day, smallest change, smallest evidence."""

    false_alerts_per_day: float = 0.5
    min_change: float = 0.3
    min_trials: float = 10.0  # denominator events in a rate window
    min_expected: float = 5.0  # expected events in a count window
    history_days: int = 14
    min_days: int = 3
    window_minutes: tuple[int, ...] = WINDOW_MINUTES
    steps: tuple[str, ...] = tuple(STEPS)
    # Live alerts are about things breaking: drops. Spikes (campaigns, bursts of one busy
    # session) are left to hourly detection; ("drop", "spike") scores both.
    directions: tuple[str, ...] = ("drop",)
    # Lower tail of a drop (setting live_tail): "inflation" scales it by one variance inflation
    # per window length; "fragments" bounds it with the sizes of sessions' parts measured on the
    # past week's sessions (anomaly/fragments.py; where those are not known, as "inflation").
    tail: str = "inflation"


@dataclass
class Scores:
    """The most significant firing window per (segment, bucket); NaN / "" where none fired."""

    fired: np.ndarray  # bool (S, B)
    sign: np.ndarray  # -1 drop, +1 spike, 0 none
    step: np.ndarray  # object (S, B): step name or ""
    window_minutes: np.ndarray  # int (S, B)
    p: np.ndarray
    z: np.ndarray
    observed: np.ndarray  # numerator (or count) over the window
    expected: np.ndarray  # expected numerator (or count) over the window
    trials: np.ndarray  # denominator over the window (NaN for counts)
    first_minutes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    alpha: float = 0.0
    min_change: float = 0.0
    # step -> (observed, expected) numerator per bucket (S, B): for "is the rate back?"
    per_bucket: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    expected_purchases: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # per bucket
    order_value: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # revenue/purchase


def per_test_alpha(
    false_alerts_per_day: float,
    segments: int,
    steps: int,
    windows: int,
    bucket_minutes: int,
    directions: int = 1,
) -> float:
    """Bonferroni: a day holds segments x steps x windows x (1440 / bucket) x directions tests,
    so with this alpha per test the expected false firings per day - an upper bound on false
    incidents, which group firings - is at most `false_alerts_per_day`."""
    per_day = 1440 // bucket_minutes
    tests = max(segments, 1) * max(steps, 1) * max(windows, 1) * per_day * max(directions, 1)
    return false_alerts_per_day / tests


def _past(history: HourlyHistory, grid: LiveGrid, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Indexes (B, D) of the same hour on each of the past `days` days, and whether each exists."""
    hour_of = (
        grid.starts.astype("datetime64[h]") - history.hours[0].astype("datetime64[h]")
    ).astype(np.int64)
    idx = hour_of[:, None] - 24 * np.arange(1, days + 1)[None, :]
    ok = (idx >= 0) & (idx < len(history.hours))
    return np.clip(idx, 0, max(len(history.hours) - 1, 0)), ok


def _gather(x: np.ndarray, idx: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(S, H) -> (S, B, D) values at `idx`, NaN where not `ok` or unknown."""
    if x.shape[1] == 0:
        return np.full((x.shape[0], *idx.shape), np.nan)
    out = x[:, idx]
    return np.where(ok[None], out, np.nan)


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the finite values; NaN (silently) where there are none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=-1)


def _trimmed(values: np.ndarray) -> np.ndarray:
    """Mask of the past days used: the known ones, minus the highest and lowest when >= 5 known."""
    valid = np.isfinite(values)
    count = valid.sum(axis=-1, keepdims=True)
    hi = np.argmax(np.where(valid, values, -np.inf), axis=-1)[..., None]
    lo = np.argmin(np.where(valid, values, np.inf), axis=-1)[..., None]
    idx = np.arange(values.shape[-1])
    return valid & ~((count >= 5) & ((idx == hi) | (idx == lo)))


def past_days_total(x: np.ndarray, history: HourlyHistory, grid: LiveGrid, days: int) -> np.ndarray:
    """(S, B): the sum of every hour from `days` days before each bucket's hour up to the same
    hour a day before (all of it at least a day old, so an ongoing incident is not in it)."""
    idx, _ = _past(history, grid, 1)
    c = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(np.nan_to_num(x), axis=1)], 1)
    hi = np.clip(idx[:, 0] + 1, 0, len(history.hours))
    lo = np.clip(idx[:, 0] + 1 - 24 * days, 0, len(history.hours))
    return c[:, hi] - c[:, lo]


@dataclass(frozen=True)
class _CountBase:
    per_bucket: np.ndarray  # expected count in each bucket (S, B), NaN without enough history
    r2: np.ndarray  # negative-binomial excess relative variance (S, B)


def count_base(
    counts: np.ndarray,
    history: HourlyHistory,
    grid: LiveGrid,
    opts: Options,
    clustering: np.ndarray | float = 1.0,
) -> _CountBase:
    """Expected bucket counts: the trimmed mean of the same hour on past days x bucket fraction.
    `clustering`: an hour's variance per expected event when nothing drifts (1: independent
    events); the day-to-day spread above it is the drift `r2` measures."""
    idx, ok = _past(history, grid, opts.history_days)
    past = _gather(counts, idx, ok)
    keep = _trimmed(past)
    days = keep.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        hourly = np.where(keep, past, 0).sum(axis=-1) / days
        hourly = np.where(days >= opts.min_days, hourly, np.nan)
        dev = np.where(keep & (hourly[..., None] > 0), ((past - hourly[..., None]) ** 2), np.nan)
        spread = _nanmean(dev) if dev.shape[-1] else np.full(hourly.shape, np.nan)
        cv2 = (spread - hourly * clustering) / hourly**2
    cv2 = np.clip(np.nan_to_num(cv2, nan=0.0), MIN_CV**2, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # day-to-day spread, plus the uncertainty of a mean over `days` past hours
        r2 = cv2 + (cv2 + clustering / np.maximum(hourly, 1e-9)) / np.maximum(days, 1)
    return _CountBase(per_bucket=hourly * grid.bucket_minutes / 60, r2=r2)


@dataclass(frozen=True)
class _RateBase:
    rate: np.ndarray  # expected rate per bucket (S, B)
    icc: np.ndarray  # overdispersion incl. the baseline's own uncertainty (S, B)


def rate_base(
    num: np.ndarray,
    den: np.ndarray,
    history: HourlyHistory,
    grid: LiveGrid,
    opts: Options,
    clustering: np.ndarray | float = 1.0,
) -> _RateBase:
    """Expected rate: past same hours pooled, shrunk towards the segment's rate over past days.
    `clustering`: how much more an hour's rate varies than independent trials allow when
    nothing drifts (trials in baskets); `icc` is the drift above it."""
    idx, ok = _past(history, grid, opts.history_days)
    p_num, p_den = _gather(num, idx, ok), _gather(den, idx, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_k = np.where(p_den > 0, p_num / p_den, np.nan)
    keep = _trimmed(rate_k) & (p_den > 0)
    days = keep.sum(axis=-1)
    pooled_num = np.where(keep, p_num, 0).sum(axis=-1)
    pooled_den = np.where(keep, p_den, 0).sum(axis=-1)
    all_num = past_days_total(num, history, grid, opts.history_days)
    all_den = past_days_total(den, history, grid, opts.history_days)
    with np.errstate(invalid="ignore", divide="ignore"):
        every = np.where(all_den.sum(0) > 0, all_num.sum(0) / all_den.sum(0), 0.5)
        prior = (all_num + PRIOR_WEIGHT * every) / (all_den + PRIOR_WEIGHT)
        rate = (pooled_num + PRIOR_WEIGHT * prior) / (pooled_den + PRIOR_WEIGHT)
        rate = np.where(days >= opts.min_days, rate, np.nan)
        p = np.clip(rate[..., None], 1e-9, 1 - 1e-9)
        c = np.asarray(clustering, dtype=float)[..., None]
        dev = np.where(keep, (rate_k - p) ** 2 / (p * (1 - p)) - c / p_den, np.nan)
        rho = _nanmean(dev) if dev.shape[-1] else np.zeros(rate.shape)
    rho = np.clip(np.nan_to_num(rho, nan=0.0), 0.0, 0.2)
    return _RateBase(rate=rate, icc=rho + clustering / (pooled_den + PRIOR_WEIGHT + 1))


def bucket_dispersion(
    num: np.ndarray,
    den: np.ndarray | None,
    buckets_per_hour: int,
    min_events: float = 5.0,
    block: int = 1,
) -> np.ndarray:
    """(S, T) past buckets -> (S,): variance inflation of bucket counts within their hour.

    Counts: sum of (x - hour mean)^2 / hour mean over sum of degrees of freedom (1 for Poisson).
    Rates: Pearson chi-square of x successes in n trials around the hour's pooled rate, over
    its degrees of freedom (1 for independent trials). Hours with few events are left out.
    With `block` > 1 the units are sums of `block` consecutive buckets of an hour (at most half
    an hour's buckets; the hour's remainder is left out): the inflation at that scale.
    """
    s, t = num.shape
    hours = t // buckets_per_hour
    block = max(1, min(block, buckets_per_hour // 2 or 1))
    per = buckets_per_hour // block

    def blocks(a: np.ndarray) -> np.ndarray:
        cut = a[:, : hours * buckets_per_hour].reshape(s, hours, buckets_per_hour)
        return cut[..., : per * block].reshape(s, hours, per, block).sum(axis=-1).astype(float)

    x = blocks(num)
    with np.errstate(invalid="ignore", divide="ignore"):
        if den is None:
            mean = x.mean(axis=-1, keepdims=True)
            chi = ((x - mean) ** 2 / mean).sum(axis=-1)
            used = (mean[..., 0] * per >= min_events) & np.isfinite(chi)
            df = np.full(chi.shape, per - 1.0)
        else:
            n = blocks(den)
            x = np.minimum(x, n)
            p = x.sum(axis=-1, keepdims=True) / n.sum(axis=-1, keepdims=True)
            var = n * p * (1 - p)
            chi = np.where(var > 0, (x - n * p) ** 2 / var, 0.0).sum(axis=-1)
            df = (n > 0).sum(axis=-1) - 1.0
            used = (x.sum(-1) >= min_events) & ((n - x).sum(-1) >= min_events) & (df > 0)
        total = np.where(used, chi, 0).sum(axis=-1)
        dof = np.where(used, df, 0).sum(axis=-1)
        phi = np.where(dof > 0, total / dof, 1.0)
    return np.clip(np.nan_to_num(phi, nan=1.0), 1.0, 100.0)


def dispersion_by_scale(
    values: dict[str, np.ndarray], buckets_per_hour: int
) -> tuple[dict[str, np.ndarray], dict[tuple[str, int], np.ndarray]]:
    """Past buckets (name -> (S, T)) -> per step the bucket-scale inflation (S,), and per
    (step, b) the inflation of sums of b buckets for b up to half an hour, never below a
    smaller scale's (clustering adds variance as a window grows to a session's span)."""
    single: dict[str, np.ndarray] = {}
    scaled: dict[tuple[str, int], np.ndarray] = {}
    for step, (num, den) in STEPS.items():
        phi = bucket_dispersion(values[num], values[den] if den else None, buckets_per_hour)
        single[step] = phi
        for b in range(1, max(buckets_per_hour // 2, 1) + 1):
            at = bucket_dispersion(
                values[num], values[den] if den else None, buckets_per_hour, block=b
            )
            phi = np.maximum(phi, at)
            scaled[(step, b)] = phi
    return single, scaled


def window_buckets(window_minutes: tuple[int, ...], bucket_minutes: int) -> list[int]:
    """Window lengths in whole buckets (each rounded, at least one), without repeats."""
    return sorted({max(1, round(m / bucket_minutes)) for m in window_minutes})


def score(grid: LiveGrid, history: HourlyHistory, opts: Options | None = None) -> Scores:
    """Score every window ending at every bucket of the grid (see the module docstring)."""
    opts = opts or Options()
    v, h = grid.values, history.values
    shape = v["views"].shape
    ks = window_buckets(opts.window_minutes, grid.bucket_minutes)
    alpha = per_test_alpha(
        opts.false_alerts_per_day,
        shape[0],
        len(opts.steps),
        len(ks),
        grid.bucket_minutes,
        len(opts.directions),
    )
    best = Scores(
        fired=np.zeros(shape, bool),
        sign=np.zeros(shape),
        step=np.full(shape, "", dtype=object),
        window_minutes=np.zeros(shape, np.int64),
        p=np.full(shape, np.nan),
        z=np.full(shape, np.nan),
        observed=np.full(shape, np.nan),
        expected=np.full(shape, np.nan),
        trials=np.full(shape, np.nan),
        first_minutes=np.zeros(shape, np.int64),
        alpha=alpha,
        min_change=opts.min_change,
    )
    buys = count_base(h["purchases"], history, grid, opts)
    best.expected_purchases = buys.per_bucket
    past_rev = past_days_total(h["revenue"], history, grid, opts.history_days)
    past_buys = past_days_total(h["purchases"], history, grid, opts.history_days)
    with np.errstate(invalid="ignore", divide="ignore"):
        best.order_value = np.where(past_buys > 0, past_rev / past_buys, 0.0)
    for step in opts.steps:
        num_name, den_name = STEPS[step]
        num = v[num_name].astype(float)
        if den_name is None:
            base = count_base(h[num_name], history, grid, opts)
            exp_b = base.per_bucket
            hour_d = _hour_clustering(history, grid, opts, num_name)
            drift = base if hour_d is None else count_base(h[num_name], history, grid, opts, hour_d)
            best.per_bucket[step] = (num, exp_b)
            for k in ks:
                phi = np.broadcast_to(history.inflation(step, k), shape)
                x, mu = window_sum(num, k), window_sum(exp_b, k)
                with np.errstate(invalid="ignore", divide="ignore"):  # mu 0: not scored below
                    r2 = window_sum(base.r2 * exp_b, k) / mu  # expectation-weighted spread
                    # clustered arrivals: counts in units of the bucket-scale variance inflation
                    d = window_sum(phi * exp_b, k) / mu
                ok = np.isfinite(mu) & (mu >= opts.min_expected)
                low, high = count_tails(
                    np.where(ok, x / d, 0), np.where(ok, mu / d, 1), np.where(ok, r2, 1)
                )
                with np.errstate(invalid="ignore", divide="ignore"):
                    r2_net = window_sum(drift.r2 * exp_b, k) / mu
                low = _fragment_low(history, opts, num_name, k, low, ok, x, mu, r2_net)
                _keep_best(
                    best,
                    step,
                    k * grid.bucket_minutes,
                    ok,
                    low,
                    high,
                    x,
                    mu,
                    None,
                    _recent(num, exp_b, k, grid.bucket_minutes),
                    opts,
                )
        else:
            den = v[den_name].astype(float)
            base_r = rate_base(h[num_name], h[den_name], history, grid, opts)
            exp_b = den * base_r.rate
            hour_d = _hour_clustering(history, grid, opts, den_name)
            drift_r = (
                base_r
                if hour_d is None
                else rate_base(h[num_name], h[den_name], history, grid, opts, hour_d)
            )
            best.per_bucket[step] = (num, exp_b)
            for k in ks:
                phi = np.broadcast_to(history.inflation(step, k), shape)
                x, n, e = window_sum(num, k), window_sum(den, k), window_sum(exp_b, k)
                with np.errstate(invalid="ignore", divide="ignore"):
                    p_bar = e / n
                    # design effect phi + (n - 1) icc: clustered trials, then day-to-day spread
                    phi_w = window_sum(phi * den, k) / n
                    icc = window_sum(base_r.icc * den, k) / n + (phi_w - 1) / np.maximum(n - 1, 1)
                ok = np.isfinite(e) & (n >= opts.min_trials) & (e > 0)
                low, high = rate_tails(
                    np.where(ok, np.minimum(x, n), 0),
                    np.where(ok, n, 1),
                    np.where(ok, p_bar, 0.5),
                    np.where(ok, icc, 0.0),
                )
                with np.errstate(invalid="ignore", divide="ignore"):
                    # the successes against n x rate; the rate's own spread as relative variance
                    r2_rate = window_sum(drift_r.icc * den, k) / n * (1 - p_bar) / p_bar
                low = _fragment_low(history, opts, num_name, k, low, ok, x, e, r2_rate)
                _keep_best(
                    best,
                    step,
                    k * grid.bucket_minutes,
                    ok,
                    low,
                    high,
                    x,
                    e,
                    n,
                    _recent(num, exp_b, k, grid.bucket_minutes),
                    opts,
                )
    return best


def _hour_clustering(
    history: HourlyHistory, grid: LiveGrid, opts: Options, metric: str
) -> np.ndarray | None:
    """(S, B): an hour's variance per event from sessions alone, E[F^2]/E[F] of the metric's
    hour-long fragments (from the exponent's slope at the smallest theta); None if unmeasured."""
    if opts.tail != "fragments":
        return None
    exponent = history.fragment_exponent(metric, max(1, 60 // grid.bucket_minutes))
    if exponent is None:
        return None
    theta = THETAS[1]
    with np.errstate(invalid="ignore"):
        d = 2 * (theta - exponent[..., 1]) / theta**2
    return np.clip(np.nan_to_num(d, nan=1.0), 1.0, 1000.0)


def _fragment_low(
    history: HourlyHistory,
    opts: Options,
    metric: str,
    k: int,
    low: np.ndarray,
    ok: np.ndarray,
    x: np.ndarray,
    mu: np.ndarray,
    r2: np.ndarray,
) -> np.ndarray:
    """The drop's tail from the measured fragments where they are known, else `low`."""
    exponent = history.fragment_exponent(metric, k) if opts.tail == "fragments" else None
    if exponent is None:
        return low
    exponent = np.broadcast_to(exponent, (*low.shape, exponent.shape[-1]))
    bound = compound_lower_tail(
        np.where(ok, x, 0), np.where(ok, mu, 1), np.where(ok, np.nan_to_num(r2), 0), exponent
    )
    return np.where(np.isfinite(bound), bound, low)


def _recent(num: np.ndarray, expected: np.ndarray, k: int, bucket_minutes: int) -> np.ndarray:
    """Relative change over the newest quarter of a k-bucket window (at least RECENT_MINUTES)."""
    width = min(k, max(1, RECENT_MINUTES // bucket_minutes, k // 4))
    x, e = window_sum(num, width), window_sum(expected, width)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(e > 0, x / e - 1, np.where(x > 0, np.inf, np.nan))


def _keep_best(
    best: Scores,
    step: str,
    minutes: int,
    ok: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    x: np.ndarray,
    e: np.ndarray,
    n: np.ndarray | None,
    recent: np.ndarray,
    opts: Options,
) -> None:
    """Fold one step x window into `best`: it fires when a tail is below alpha, the change is
    large enough, and the window's newest bucket does not move the other way."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = x / e - 1
    # the newest minutes of the window must still show (half) the change: a long window does
    # not keep firing for hours after the rate is back
    drop = ok & (low < best.alpha) & (rel <= -opts.min_change) & ~(recent > -opts.min_change / 2)
    spike = ok & (high < best.alpha) & (rel >= opts.min_change) & ~(recent < opts.min_change / 2)
    drop &= "drop" in opts.directions
    spike &= "spike" in opts.directions
    fire = drop | spike
    p = np.where(drop, low, high)
    shortest = fire & ((best.first_minutes == 0) | (minutes < best.first_minutes))
    best.first_minutes = np.where(shortest, minutes, best.first_minutes)
    better = fire & (~best.fired | (p < best.p))
    best.fired |= fire
    best.sign = np.where(better, np.where(drop, -1.0, 1.0), best.sign)
    best.step = np.where(better, step, best.step)
    best.window_minutes = np.where(better, minutes, best.window_minutes)
    best.p = np.where(better, p, best.p)
    best.z = np.where(better, z_of(np.where(better, p, 0.5), np.where(drop, -1.0, 1.0)), best.z)
    best.observed = np.where(better, x, best.observed)
    best.expected = np.where(better, e, best.expected)
    if n is not None:
        best.trials = np.where(better, n, best.trials)


def firing_rows(grid: LiveGrid, scores: Scores, bucket: int) -> list[dict[str, Any]]:
    """The segments firing at bucket index `bucket` (the newest complete one, usually), as rows."""
    out = []
    end = _utc(grid.starts[bucket]) + timedelta(minutes=grid.bucket_minutes)
    for s in np.flatnonzero(scores.fired[:, bucket]):
        dimension, segment = grid.keys[s]
        z = float(scores.z[s, bucket])
        out.append(
            {
                "dimension": dimension,
                "segment": segment,
                "step": str(scores.step[s, bucket]),
                "type": "drop" if scores.sign[s, bucket] < 0 else "spike",
                "window_minutes": int(scores.window_minutes[s, bucket]),
                "window_end": end,
                "observed": float(scores.observed[s, bucket]),
                "expected": float(scores.expected[s, bucket]),
                "trials": None
                if np.isnan(scores.trials[s, bucket])
                else float(scores.trials[s, bucket]),
                "p": float(scores.p[s, bucket]),
                "z": z,
                "severity": str(severity(z)),
            }
        )
    return out


def newest_complete(latest_event: datetime, bucket_minutes: int, grace_s: float = 30.0) -> datetime:
    """Start of the newest bucket that has ended `grace_s` before the latest event seen."""
    step = bucket_minutes * 60
    frontier = latest_event.timestamp() - grace_s
    end = (int(frontier) // step) * step
    return datetime.fromtimestamp(end - step, UTC)


def _utc(value: np.datetime64) -> datetime:
    return value.astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC)
