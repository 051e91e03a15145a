"""Pure scoring maths: trailing seasonal baselines and exact-tail scans over windows of hours.

Every function takes hourly series shaped (segments, hours). Everything computed for hour t
uses only hours <= t: baselines come from the same hour on past days (t - 24k), dispersion from
the trailing week of those comparisons, and a window of k hours ends at t. Adding later hours
therefore never changes an earlier score, so batch and live scoring agree.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

STEPS = {
    # step: (numerator, denominator)
    "view_to_cart": ("carts", "views"),
    "cart_to_purchase": ("purchases", "carts"),
    "conversion": ("purchases", "views"),
}
WINDOWS = (1, 2, 3, 4, 6, 8, 12, 24)
# Pseudo-trials of the fallback rate mixed into every baseline: a rate seen as 0 of 3 becomes small, not 0.
PRIOR_WEIGHT = 10.0
DISPERSION_HOURS = 168  # dispersion is estimated over the trailing week
MIN_P = 1e-300


def past_same_hour(series: np.ndarray, history_days: int, lo: int = 0) -> np.ndarray:
    """(S, T) -> (S, T - lo, D): for each hour from `lo` on, the same hour on each of the
    previous D days (NaN if before the start)."""
    s, t = series.shape
    out = np.full((s, max(t - lo, 0), history_days), np.nan)
    for k in range(1, history_days + 1):
        lag = 24 * k
        first = max(lo, lag)  # the first output hour whose lagged hour exists
        if first < t:
            out[:, first - lo :, k - 1] = series[:, first - lag : t - lag]
    return out


def _trim_mask(values: np.ndarray) -> np.ndarray:
    """Ignore the single highest and lowest past day when at least 5 are known (robust to a past incident)."""
    valid = ~np.isnan(values)
    count = valid.sum(axis=-1, keepdims=True)
    filled_hi = np.where(valid, values, -np.inf)
    filled_lo = np.where(valid, values, np.inf)
    hi = np.argmax(filled_hi, axis=-1)[..., None]
    lo = np.argmin(filled_lo, axis=-1)[..., None]
    idx = np.arange(values.shape[-1])
    trimmed = valid & (count >= 5) & ((idx == hi) | (idx == lo))
    return valid & ~trimmed


def _cumsum0(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(x.shape[:-1] + (1,)), np.cumsum(x, axis=-1)], axis=-1)


def window_sum(x: np.ndarray, k: int) -> np.ndarray:
    """Sum over the k hours ending at each hour; NaN when the window starts before the series or holds a NaN."""
    t = x.shape[-1]
    c = _cumsum0(np.nan_to_num(x, nan=0.0))
    bad = _cumsum0(np.isnan(x).astype(float))
    out = np.full(x.shape, np.nan)
    if k <= t:
        total = c[..., k:] - c[..., : t + 1 - k]
        holes = bad[..., k:] - bad[..., : t + 1 - k]
        out[..., k - 1 :] = np.where(holes > 0, np.nan, total)
    return out


def _trailing_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Mean of the finite values among the `width` hours ending at each hour (NaN if none)."""
    finite = np.isfinite(x)
    c = _cumsum0(np.where(finite, x, 0.0))
    n = _cumsum0(finite.astype(float))
    t = x.shape[-1]
    lo = np.maximum(np.arange(1, t + 1) - width, 0)
    total = c[..., 1:] - c[..., lo]
    count = n[..., 1:] - n[..., lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _past_days_total(x: np.ndarray, history_days: int) -> np.ndarray:
    """Sum of every hour from 24*D hours back up to 24 hours back (a day before t, so an ongoing incident is out)."""
    t = x.shape[-1]
    c = _cumsum0(np.nan_to_num(x))  # blanked hours (no data, annotated) count as nothing
    idx = np.arange(t)
    hi = np.clip(idx - 23, 0, t)  # exclusive end: hours <= t - 24
    lo = np.clip(idx - 24 * history_days, 0, t)
    return c[..., hi] - c[..., lo]


@dataclass(frozen=True)
class RateBaseline:
    expected: np.ndarray  # expected rate, (S, T); NaN when there is not enough history
    rho: np.ndarray  # day-to-day overdispersion (intra-class correlation), trailing, (S, T)
    days: np.ndarray  # past days used, (S, T)
    strength: np.ndarray  # trials behind the expected rate (past denominator + prior), (S, T)
    # Variance inflation from clustering (baskets decided together), >= 1, trailing, (S, T):
    # the variance of an hour's count of successes over the binomial's, besides day-to-day drift.
    phi: np.ndarray | None = None


def rate_baseline(
    num: np.ndarray, den: np.ndarray, history_days: int, min_days: int = 3, lo: int = 0
) -> RateBaseline:
    """Expected rate of num/den from the same hour on past days, pooled after trimming extremes.

    A small pseudo-count of the segment's own all-hours rate (itself shrunk to the rate of every
    series together) keeps the expected rate sound when the past same hours saw no trials or 0 successes.
    With `lo`, the baseline of the hours from `lo` on only, shaped (S, T - lo): the hours before
    are read as history. Its trailing dispersion is exact from `lo + DISPERSION_HOURS - 1` on.
    """
    num = num.astype(float)
    den = den.astype(float)
    past_num = past_same_hour(num, history_days, lo)
    past_den = past_same_hour(den, history_days, lo)
    with np.errstate(invalid="ignore", divide="ignore"):
        past_rate = np.where(past_den > 0, past_num / past_den, np.nan)
    keep = _trim_mask(past_rate)
    pooled_num = np.where(keep, past_num, 0).sum(axis=-1)
    pooled_den = np.where(keep, past_den, 0).sum(axis=-1)
    day_num = _past_days_total(num, history_days)[:, lo:]
    day_den = _past_days_total(den, history_days)[:, lo:]
    # Enough history = the shop saw trials at this hour on min_days past days (a segment may not).
    watched = (past_same_hour(den.sum(axis=0, keepdims=True), history_days, lo) > 0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        every = np.where(day_den.sum(axis=0) > 0, day_num.sum(axis=0) / day_den.sum(axis=0), np.nan)
        prior = (day_num + PRIOR_WEIGHT * every) / (day_den + PRIOR_WEIGHT)
        enough = watched >= min_days
        expected = np.where(
            enough, (pooled_num + PRIOR_WEIGHT * prior) / (pooled_den + PRIOR_WEIGHT), np.nan
        )
        # Pearson statistic of each past same hour against the expected rate: under clustering
        # phi and day-to-day drift rho its mean is phi + rho * trials.
        p = expected[..., None]
        used = keep & (past_den > 0)
        chi = np.where(used, (past_num - past_den * p) ** 2 / (past_den * p * (1 - p)), np.nan)
    # The same over whole past days (24-hour windows ending a day or more before): drift weighs
    # far more there, so the two together separate phi from rho.
    day_num, day_den = window_sum(num, 24), window_sum(den, 24)
    past_dn = past_same_hour(day_num, history_days, lo)
    past_dd = past_same_hour(day_den, history_days, lo)
    with np.errstate(invalid="ignore", divide="ignore"):
        day_rate = np.where(past_dd > 0, past_dn / past_dd, np.nan)
        day_keep = _trim_mask(day_rate) & (past_dd > 0)
        day_p = np.where(day_keep, past_dn, 0).sum(-1) / np.where(day_keep, past_dd, 0).sum(-1)
        q = day_p[..., None]
        day_chi = np.where(day_keep, (past_dn - past_dd * q) ** 2 / (past_dd * q * (1 - q)), np.nan)
    phi, rho = _inflation(
        chi,
        np.where(used, past_den, np.nan),
        (~np.isnan(past_rate)).sum(axis=-1),
        day_chi,
        np.where(day_keep, past_dd, np.nan),
        (~np.isnan(day_rate)).sum(axis=-1),
    )
    return RateBaseline(
        expected=expected,
        rho=np.clip(rho, 0.0, 0.2),
        days=keep.sum(axis=-1),
        strength=pooled_den + PRIOR_WEIGHT,
        phi=phi,
    )


MAX_PHI = 60.0
MIN_PHI = 1.25
WINSOR = 50.0  # a past statistic counts at most this many times its hour's median


def _winsorise(chi: np.ndarray) -> np.ndarray:
    """Cap each past day's statistic at WINSOR x the median of its hour's past days: a past
    incident or outage is not clustering, and one would otherwise dominate a mean."""
    cap = WINSOR * np.maximum(np.nanmedian(chi, axis=-1, keepdims=True), 0.05)
    return np.where(np.isnan(chi), np.nan, np.minimum(chi, cap))


@functools.cache
def _trim_factors(most: int) -> np.ndarray:
    """For n past values: the mean squared deviation, from their mean, of the values kept after
    `_trim_mask` (all when n < 5, else all but the highest and the lowest), over the variance.
    Dropping the extremes of 14 leaves 0.56 of it: without this, dispersion reads low by half."""
    rng = np.random.default_rng(0)
    out = np.full(most + 1, np.nan)
    for n in range(2, most + 1):
        z = np.sort(rng.standard_normal((20_000, n)), axis=1)
        kept = z[:, 1:-1] if n >= 5 else z
        out[n] = float(np.mean((kept - kept.mean(axis=1, keepdims=True)) ** 2))
    return out


def _trim_factor(valid: np.ndarray) -> np.ndarray:
    table = _trim_factors(int(valid.max(initial=2)))
    return table[np.clip(valid, 0, len(table) - 1).astype(np.int64)]


def _inflation(
    hour_chi: np.ndarray,
    hour_n: np.ndarray,
    hour_valid: np.ndarray,
    day_chi: np.ndarray,
    day_n: np.ndarray,
    day_valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Clustering phi and drift rho from Pearson statistics of past hours and past days.

    Model: E[chi] = phi + rho * n. Per hour the mean statistic and trials over the past days,
    averaged over the trailing week, give one equation from hours and one from days; both
    solved, phi held to [1, MAX_PHI] and rho to >= 0 (each refit from the other when clipped).
    Each hour's highest and lowest past day are already left out (a past incident counts little).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hour_chi = _winsorise(hour_chi) / _trim_factor(hour_valid)[..., None]
        day_chi = _winsorise(day_chi) / _trim_factor(day_valid)[..., None]
        b = _trailing_mean(np.nanmean(hour_chi, axis=-1), DISPERSION_HOURS)
        a = _trailing_mean(np.nanmean(hour_n, axis=-1), DISPERSION_HOURS)
        big_b = _trailing_mean(np.nanmean(day_chi, axis=-1), DISPERSION_HOURS)
        big_a = _trailing_mean(np.nanmean(day_n, axis=-1), DISPERSION_HOURS)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (big_b - b) / (big_a - a)
        rho = np.where(np.isfinite(rho) & (big_a > a), rho, np.nan)
        phi = b - rho * a
        # Clipped phi: rho from the days alone; clipped rho: phi from the hours alone.
        low_phi = ~(phi >= 1)
        rho = np.where(low_phi, (big_b - 1) / big_a, rho)
        neg_rho = ~(rho >= 0)
        rho = np.where(neg_rho, 0.0, rho)
        phi = np.where(neg_rho, b, np.where(low_phi, 1.0, phi))
    phi = np.clip(np.nan_to_num(phi, nan=1.0), 1.0, MAX_PHI)
    # Independent trials measure about 1.1 (estimation noise): below MIN_PHI they are taken as
    # independent, and tested exactly as before.
    phi = np.where(phi < MIN_PHI, 1.0, phi)
    return phi, np.nan_to_num(rho, nan=0.0)


def _cell_excess(dev2: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Per hour: mean squared deviation minus the sampling noise, averaged over the trailing week."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cell = np.nanmean(dev2 - noise, axis=-1)
    return _trailing_mean(cell, DISPERSION_HOURS)


@dataclass(frozen=True)
class CountBaseline:
    expected: np.ndarray  # expected count, (S, T)
    cv: np.ndarray  # extra relative day-to-day spread, trailing, (S, T)
    days: np.ndarray  # past days used, (S, T)
    phi: np.ndarray | None = None  # variance over mean of an hour's count (clustering), >= 1


def count_baseline(
    counts: np.ndarray,
    history_days: int,
    min_days: int = 3,
    trend: np.ndarray | None = None,
    lo: int = 0,
) -> CountBaseline:
    """Expected count from the same hour on past days, each moved to today's level by `trend`
    (growth per day, (T - lo,); see `daily_growth`), with the extra spread: clustering phi (an
    hour's variance over its mean, besides drift) and the relative day-to-day spread cv.
    With `lo`, of the hours from `lo` on only, as `rate_baseline`."""
    past = past_same_hour(counts.astype(float), history_days, lo)
    if trend is not None:
        lags = np.arange(1, history_days + 1)
        past = past * np.exp(np.log(trend)[:, None] * lags)[None]
    keep = _trim_mask(past)
    days = keep.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(days >= min_days, np.where(keep, past, 0).sum(axis=-1) / days, np.nan)
        e = expected[..., None]
        used = keep & (e > 0)
        chi = np.where(used, (past - e) ** 2 / e, np.nan)  # E = phi + cv^2 * e
        day = past_same_hour(window_sum(counts.astype(float), 24), history_days, lo)
        if trend is not None:
            day = day * np.exp(np.log(trend)[:, None] * np.arange(1, history_days + 1))[None]
        day_keep = _trim_mask(day)  # a day with no traffic at all is evidence of spread too
        day_e = (np.where(day_keep, day, 0).sum(-1) / day_keep.sum(-1))[..., None]
        day_chi = np.where(day_keep, (day - day_e) ** 2 / day_e, np.nan)
    phi, cv2 = _inflation(
        chi,
        np.where(used, np.broadcast_to(e, past.shape), np.nan),
        (~np.isnan(past)).sum(axis=-1),
        day_chi,
        np.where(day_keep, np.broadcast_to(day_e, day.shape), np.nan),
        (~np.isnan(day)).sum(axis=-1),
    )
    cv = np.sqrt(np.clip(cv2, 0.0, 1.0))
    return CountBaseline(expected=expected, cv=np.maximum(cv, 0.05), days=days, phi=phi)


def daily_growth(counts: np.ndarray, history_days: int, lo: int = 0) -> np.ndarray:
    """(S, T) -> (T - lo,): traffic growth per day at each hour (from `lo` on), from the total of
    every series.

    Theil-Sen (median of pairwise slopes) over the logs of the past days' totals (24-hour windows
    ending a day or more before the hour), so one odd day - an outage, a promotion - moves it
    little, and nothing after the hour is used. 1 (no growth) until 4 past days are known.
    """
    total = window_sum(np.nansum(counts, axis=0, keepdims=True).astype(float), 24)
    past = past_same_hour(total, history_days, lo)[0]  # (T, D): the day ending 24k hours back
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.where(past > 0, np.log(past), np.nan)
    slopes = []
    for i in range(history_days):
        for j in range(i + 1, history_days):
            slopes.append((logs[:, i] - logs[:, j]) / (j - i))  # older day j -> newer day i
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stacked = np.stack(slopes, axis=-1)
        enough = np.isfinite(stacked).sum(-1) >= 6
        slope = np.where(enough, np.nanmedian(stacked, axis=-1), 0.0)
    return np.exp(np.clip(np.nan_to_num(slope), -0.2, 0.2))


# A sum of baskets has a heavier upper tail than the binomial of the same variance (one large
# basket bought moves a small segment's hour a lot): clustered spike tails are taken at
# 1 + 1.5 (phi - 1). Chosen on the tuning months (seed 901); the matrix reports other seeds.
CLUSTER_TAIL = 1.5


def _tail_phi(phi: np.ndarray) -> np.ndarray:
    """The clustering a tail is taken at: 1 stays 1, each unit above it counts CLUSTER_TAIL."""
    return 1 + CLUSTER_TAIL * np.maximum(phi - 1, 0)


# Exact beta-binomial sums cost O(n); above this many trials the design-effect binomial is used.
EXACT_MAX_TRIALS = 5_000


def rate_tails(
    x: np.ndarray,
    n: np.ndarray,
    p: np.ndarray,
    icc: np.ndarray,
    phi: np.ndarray | float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """P(X <= x) and P(X >= x) for x successes in n trials at rate p with intra-class correlation icc.

    Exact beta-binomial tails (mean p, concentration 1/icc - 1) up to EXACT_MAX_TRIALS trials;
    beyond, where counts are large, the binomial tail of x/d successes in n/d trials with the
    beta-binomial's design effect d = 1 + (n-1) icc. With icc = 0 both are the binomial test.
    Where trials come in clusters (phi > 1: baskets bought or dropped whole), the design effect
    is d = phi + n icc: the variance of clustered trials plus the drift shared by the window.
    """
    x, n, p, icc, phi = np.broadcast_arrays(
        *(np.asarray(a, dtype=float) for a in (x, n, p, icc, phi))
    )
    p = np.clip(p, 1e-12, 1 - 1e-12)
    low, high = np.ones(x.shape), np.ones(x.shape)
    clustered = phi > 1 + 1e-6
    if clustered.any():
        # A sum of baskets (each bought or dropped whole) has a heavier upper tail than the
        # binomial of its variance, but no heavier a lower one: a sum of independent non-negative
        # parts falls below its mean no faster than a Gaussian of its variance allows (Maurer's
        # bound), the exponent the binomial at the design effect has. So only spikes get the margin.
        shared = n[clustered] * icc[clustered]
        xc, nc, pc = x[clustered], n[clustered], p[clustered]
        d_low = phi[clustered] + shared
        d_high = _tail_phi(phi[clustered]) + shared
        low[clustered] = binomial_tails(xc / d_low, nc / d_low, pc)[0]
        high[clustered] = binomial_tails(xc / d_high, nc / d_high, pc)[1]
    small = (n <= EXACT_MAX_TRIALS) & (icc > 1e-9) & ~clustered
    if small.any():
        conc = 1 / np.minimum(icc[small], 0.5) - 1
        a, b = p[small] * conc, (1 - p[small]) * conc
        xs, ns = np.round(x[small]), np.round(n[small])
        low[small] = stats.betabinom.cdf(xs, ns, a, b)
        high[small] = np.where(xs <= 0, 1.0, stats.betabinom.sf(xs - 1, ns, a, b))
    big = ~small & ~clustered
    if big.any():
        d = 1 + (n[big] - 1) * icc[big]
        low[big], high[big] = binomial_tails(x[big] / d, n[big] / d, p[big])
    return np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)


def binomial_tails(x: np.ndarray, n: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binomial P(X <= x) and P(X >= x) through the regularised incomplete beta (real x, n allowed)."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(x >= n, 1.0, special.betainc(np.maximum(n - x, 1e-12), x + 1, 1 - p))
        high = np.where(x <= 0, 1.0, special.betainc(np.maximum(x, 1e-12), n - x + 1, p))
    return low, high


def count_tails(x: np.ndarray, mu: np.ndarray, r2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(X <= x) and P(X >= x) for a count with mean mu and variance mu + r2 mu^2 (negative binomial)."""
    size = 1 / np.maximum(r2, 1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = size / (size + mu)
        low = special.betainc(size, x + 1, q)
        high = np.where(x <= 0, 1.0, special.betainc(np.maximum(x, 1e-12), size, 1 - q))
    return low, high


def z_of(p_one_sided: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """Signed normal score of a one-sided tail probability (|z| <= 37, however small the p)."""
    return sign * stats.norm.isf(np.clip(p_one_sided, MIN_P, 0.5))


@dataclass(frozen=True)
class Scan:
    """The most significant firing window ending at each (segment, hour); NaN / 0 where none fired."""

    fired: np.ndarray  # bool (S, T)
    sign: np.ndarray  # -1 drop, +1 spike
    window: np.ndarray  # hours in the window that fired (int, 0 when none)
    p: np.ndarray  # one-sided tail probability of that window
    z: np.ndarray  # signed normal score of p
    observed: np.ndarray  # numerator (or count) summed over the window
    trials: np.ndarray  # denominator summed over the window (NaN for counts)
    expected: np.ndarray  # expected numerator (or count) over the window


def _best(fields: list[tuple[Any, ...]], windows: tuple[int, ...], shape: tuple[int, ...]) -> Scan:
    fired = np.zeros(shape, bool)
    out = {k: np.full(shape, np.nan) for k in ("sign", "p", "observed", "trials", "expected")}
    window = np.zeros(shape, np.int64)
    for k, (fire, sign, p, obs, trials, exp) in zip(windows, fields, strict=True):
        better = fire & (~fired | (p < out["p"]))
        fired |= fire
        window = np.where(better, k, window)
        for name, value in (
            ("sign", sign),
            ("p", p),
            ("observed", obs),
            ("trials", trials),
            ("expected", exp),
        ):
            out[name] = np.where(better, value, out[name])
    sign = np.nan_to_num(out["sign"])
    return Scan(
        fired=fired,
        sign=sign,
        window=window,
        p=out["p"],
        z=np.where(fired, z_of(np.nan_to_num(out["p"], nan=0.5), sign), np.nan),
        observed=out["observed"],
        trials=out["trials"],
        expected=out["expected"],
    )


# Below this many past days a drop is tested with the spike side's wider baseline term.
YOUNG_DAYS = 7


def scan_rate(
    num: np.ndarray,
    den: np.ndarray,
    base: RateBaseline,
    *,
    alpha: float,
    min_change: float,
    min_trials: float,
    windows: tuple[int, ...] = WINDOWS,
) -> Scan:
    """Windows of k hours ending at each hour: observed successes against sum(trials x expected rate).

    A window fires when a one-sided tail is below `alpha`, the relative change is at least
    `min_change`, it holds `min_trials`, and its last hour moves the same way (so a window does not
    keep firing for a day after the incident ended).
    """
    num = num.astype(float)
    den = den.astype(float)
    exp_h = den * base.expected
    last_dir = np.sign(num - exp_h)
    fields = []
    for k in windows:
        x = window_sum(num, k)
        n = window_sum(den, k)
        e = window_sum(exp_h, k)
        strength = window_sum(den * base.strength, k)
        # Each hour's expected rate is its own estimate (that hour on past days), so for a drop
        # their sampling errors add hour by hour, sum(n_h^2 / m_h), not n^2 / mean(m_h) as if
        # the whole window rested on one hour's history; the drift term also carries the
        # baseline's own drift (averaged over its days). Spikes keep the wider, shared term: an
        # estimated rate's error is skewed upwards on small counts and a basket sum's upper tail
        # is heavy. Baselines of under a week keep it on both sides (few days to measure drift).
        spread = window_sum(den**2 / base.strength, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_bar = e / n
            per_hour = np.where(n > 0, spread / n**2, 0.0)
            strength = np.where(n > 0, strength / n, np.inf)
            rel = x / e - 1
        phi = np.ones(num.shape) if base.phi is None else base.phi
        icc_up = base.rho + phi / (strength + 1)
        icc_down = base.rho * (1 + 1 / np.maximum(base.days, 1)) + phi * per_hour
        icc_down = np.where(base.days < YOUNG_DAYS, np.maximum(icc_down, icc_up), icc_down)
        ok = np.isfinite(e) & (n >= min_trials) & (e > 0)
        # Exact tails only where the effect is big enough and the last hour agrees (cheap screen).
        down = ok & (rel <= -min_change) & (last_dir < 0)
        up = ok & (rel >= min_change) & (last_dir > 0)
        low, high = np.ones(num.shape), np.ones(num.shape)
        for side, out, which in ((down, low, 0), (up, high, 1)):
            cells = np.nonzero(side)
            if not cells[0].size:
                continue
            # The binomial tail (no overdispersion) is lighter than the beta-binomial's: a cheap
            # screen, so the exact tail is computed only where it can fire.
            plain = binomial_tails(x[cells], n[cells], p_bar[cells])
            keep = plain[which] < alpha
            cells = tuple(c[keep] for c in cells)
            icc = icc_down if which == 0 else icc_up
            out[cells] = rate_tails(x[cells], n[cells], p_bar[cells], icc[cells], phi[cells])[which]
        drop = down & (low < alpha)
        spike = up & (high < alpha)
        fields.append((drop | spike, np.where(drop, -1.0, 1.0), np.where(drop, low, high), x, n, e))
    return _best(fields, windows, num.shape)


def scan_count(
    counts: np.ndarray,
    base: CountBaseline,
    *,
    alpha: float,
    min_change: float,
    min_expected: float,
    windows: tuple[int, ...] = WINDOWS,
) -> Scan:
    """Windows of k hours ending at each hour: observed count against the summed expected counts.

    Negative-binomial tails: Poisson noise, the segment's day-to-day spread, and the uncertainty
    of a baseline averaged over a few past days.
    """
    counts = counts.astype(float)
    last_dir = np.sign(counts - base.expected)
    days = np.maximum(base.days, 1)
    phi = np.ones(counts.shape) if base.phi is None else base.phi
    fields = []
    for k in windows:
        x = window_sum(counts, k)
        mu = window_sum(base.expected, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = base.cv**2 * (1 + 1 / days) + phi / (days * mu)
            rel = x / mu - 1
        ok = np.isfinite(mu) & (mu >= min_expected)
        down = ok & (rel <= -min_change) & (last_dir < 0)
        up = ok & (rel >= min_change) & (last_dir > 0)
        low, high = np.ones(counts.shape), np.ones(counts.shape)
        for side, out, which in ((down, low, 0), (up, high, 1)):
            cells = np.nonzero(side)
            if cells[0].size:
                # Clustered counts (variance phi x mean): the count in units of phi. Views come
                # in sessions of very unequal sizes, and their day-to-day spread is estimated
                # from few days: both tails keep the margin (dropping it on this side raised
                # false traffic drops on the tuning months).
                f = _tail_phi(phi[cells])
                out[cells] = count_tails(x[cells] / f, mu[cells] / f, r2[cells])[which]
        drop = down & (low < alpha)
        spike = up & (high < alpha)
        fields.append(
            (
                drop | spike,
                np.where(drop, -1.0, 1.0),
                np.where(drop, low, high),
                x,
                np.full(x.shape, np.nan),
                mu,
            )
        )
    return _best(fields, windows, counts.shape)


def per_test_alpha(false_per_week: float, segments: int, steps: int, windows: int) -> float:
    """Bonferroni: a week holds segments x steps x windows x 168 hours x 2 directions tests.

    If every test has this false-positive probability, the expected number of false firings in a
    week - an upper bound on false incidents, which group firings - is at most `false_per_week`.
    """
    tests = max(segments, 1) * steps * windows * 168 * 2
    return false_per_week / tests


def severity(z: np.ndarray | float) -> np.ndarray:
    """low < medium (|z| >= 4) < high (|z| >= 6) < critical (|z| >= 10)."""
    a = np.abs(np.asarray(z, dtype=float))
    return np.select([a >= 10, a >= 6, a >= 4], ["critical", "high", "medium"], default="low")


def p_value(z: np.ndarray) -> np.ndarray:
    """Two-sided normal p-value of a z-score (used by the reference method)."""
    return 2 * stats.norm.sf(np.abs(z))


SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
