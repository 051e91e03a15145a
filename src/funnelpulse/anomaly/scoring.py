"""Pure scoring maths: trailing seasonal baselines and overdispersed binomial / count z-scores.

Every function takes hourly series shaped (segments, hours); the baseline of hour t uses only
hours t - 24k (k = 1..history_days), never t itself or anything later, so batch and live
scoring give the same answer for the same hour.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

STEPS = {
    # step: (numerator, denominator)
    "view_to_cart": ("carts", "views"),
    "cart_to_purchase": ("purchases", "carts"),
    "conversion": ("purchases", "views"),
}


def past_same_hour(series: np.ndarray, history_days: int) -> np.ndarray:
    """(S, T) -> (S, T, D): for each hour, the same hour on each of the previous D days (NaN if before the start)."""
    s, t = series.shape
    out = np.full((s, t, history_days), np.nan)
    for k in range(1, history_days + 1):
        lag = 24 * k
        if lag < t:
            out[:, lag:, k - 1] = series[:, : t - lag]
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


CHI2_1_MEDIAN = float(stats.chi2.median(1))


def _excess_per_row(dev2: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Per row: robust mean of squared deviations minus the mean sampling noise.

    Squared deviations are chi-square(1) shaped, so their median divided by median(chi2_1)
    estimates their mean while staying immune to a few incident hours in the history.
    """
    rows = dev2.shape[0]
    if dev2.size == 0:
        return np.zeros(rows)
    dev2 = np.where(np.isfinite(dev2), dev2, np.nan).reshape(rows, -1)
    noise = np.where(np.isfinite(noise), noise, np.nan).reshape(rows, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(dev2, axis=1) / CHI2_1_MEDIAN - np.nanmean(noise, axis=1)


@dataclass(frozen=True)
class RateBaseline:
    expected: np.ndarray  # expected rate, (S, T); NaN when there is not enough history
    rho: np.ndarray  # overdispersion (intra-class correlation) per segment, (S, 1)
    days: np.ndarray  # past days used, (S, T)


def rate_baseline(
    num: np.ndarray, den: np.ndarray, history_days: int, min_days: int = 3
) -> RateBaseline:
    """Expected rate of num/den from the same hour on past days, pooled after trimming extremes."""
    past_num = past_same_hour(num.astype(float), history_days)
    past_den = past_same_hour(den.astype(float), history_days)
    with np.errstate(invalid="ignore", divide="ignore"):
        past_rate = np.where(past_den > 0, past_num / past_den, np.nan)
    keep = _trim_mask(past_rate)
    pooled_num = np.where(keep, past_num, 0).sum(axis=-1)
    pooled_den = np.where(keep, past_den, 0).sum(axis=-1)
    days = keep.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where((days >= min_days) & (pooled_den > 0), pooled_num / pooled_den, np.nan)
        # Method of moments: how much more the past daily rates vary than binomial noise explains.
        p = expected[..., None]
        binom_var = p * (1 - p) / past_den
        used = keep & (past_den > 0)
        dev2 = np.where(used, (past_rate - p) ** 2 / (p * (1 - p)), np.nan)
        noise = np.where(used, binom_var / (p * (1 - p)), np.nan)
    rho = _excess_per_row(dev2, noise)
    rho = np.clip(np.nan_to_num(rho, nan=0.0), 0.0, 0.2)[:, None]
    return RateBaseline(expected=expected, rho=rho, days=days)


def rate_z(
    observed: np.ndarray, trials: np.ndarray, expected: np.ndarray, rho: np.ndarray | float
) -> np.ndarray:
    """z of `observed` successes in `trials` against rate `expected`, with beta-binomial variance.

    Variance n p (1 - p) (1 + (n - 1) rho): with rho = 0 this is the binomial test; with rho > 0 a
    big segment is not judged on sampling noise alone, yet more trials still mean more evidence.
    """
    n = trials.astype(float)
    p = np.clip(expected, 1e-9, 1 - 1e-9)
    var = n * p * (1 - p) * (1 + np.maximum(n - 1, 0) * rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (observed - n * expected) / np.sqrt(var), np.nan)


@dataclass(frozen=True)
class CountBaseline:
    expected: np.ndarray  # expected count, (S, T)
    cv: np.ndarray  # extra relative spread per segment, (S, 1)


def count_baseline(counts: np.ndarray, history_days: int, min_days: int = 3) -> CountBaseline:
    past = past_same_hour(counts.astype(float), history_days)
    keep = _trim_mask(past)
    days = keep.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(days >= min_days, np.where(keep, past, 0).sum(axis=-1) / days, np.nan)
        rel = (past - expected[..., None]) / expected[..., None]
        used = keep & (expected[..., None] > 0)
        spread = np.where(used, rel**2, np.nan)
        poisson = np.where(used, 1 / np.maximum(expected[..., None], 1e-9), np.nan)
    cv2 = _excess_per_row(spread, poisson)
    cv = np.sqrt(np.clip(np.nan_to_num(cv2, nan=0.0), 0.0, 1.0))[:, None]
    return CountBaseline(expected=expected, cv=np.maximum(cv, 0.05))


def count_z(observed: np.ndarray, expected: np.ndarray, cv: np.ndarray | float) -> np.ndarray:
    """z of an hourly count against its expectation: Poisson noise plus a relative spread `cv`."""
    var = expected + (cv * expected) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, (observed - expected) / np.sqrt(var), np.nan)


def p_value(z: np.ndarray) -> np.ndarray:
    return 2 * stats.norm.sf(np.abs(z))


def severity(z: np.ndarray | float) -> np.ndarray:
    """low < medium (|z| >= 4) < high (|z| >= 6) < critical (|z| >= 10)."""
    a = np.abs(np.asarray(z, dtype=float))
    return np.select([a >= 10, a >= 6, a >= 4], ["critical", "high", "medium"], default="low")


SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
