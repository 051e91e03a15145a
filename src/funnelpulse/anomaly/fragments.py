"""Lower tails of clustered counts from the sizes of their independent parts, measured on history.

A window's purchases (or views, carts) are not independent events: each comes from a session,
and a session's events in one window - its *fragment* there - arrive together (a basket of 9
bought whole is 9 purchases or none). Sessions are independent, so a window's count is a sum of
independent fragments: compound Poisson. Its lower tail is bounded by Chernoff's inequality with
the fragments' Laplace transform phi(theta) = E[exp(-theta F)], which is measured directly on the
past week's sessions at the window's own length (`fragment_exponents`):

    P(X <= x) <= min over theta >= 0 of exp(theta x) E[exp(-theta X)],
    E[exp(-theta X)] = exp(-mu (1 - phi(theta)) / m)    (mu expected events, m mean fragment)

and with the expectation itself uncertain (day-to-day spread, relative variance r2, a gamma
mixture) (1 + r2 mu (1 - phi(theta)) / m) ** (-1 / r2). This is a bound, not an approximation:
it holds whatever the fragment size distribution, where a single variance inflation (the
bucket-dispersion route) either overstates the evidence of a complete break (a beta-binomial
with that variance puts far too little mass at zero) or understates it (a scaled Poisson at
E[F^2]/E[F] treats every part as the largest). At x = 0 it is exact: (1 + r2 mu/m) ** (-1/r2), the
chance that no fragment came at all.

For a rate (purchases among carts) the same bound is taken for the successes against their
expectation n x rate: given the trials, the successful fragments are binomial, whose lower tail
is lighter than the Poisson's of the same mean (log(1 + y) <= y), so the bound stays a bound.
"""

from __future__ import annotations

import numpy as np

# Chernoff parameters searched: the optimum for a drop to a fraction r of the mean lies near
# theta = -ln(r) / F; up to 30 covers a complete break (exp(-30) is nothing next to alpha).
THETAS = np.concatenate([[0.0], np.geomspace(1e-3, 30.0, 48)])
MIN_FRAGMENTS = 50  # a week with fewer parts of a segment's events does not measure their sizes


def fragment_exponents(
    segment: np.ndarray,
    session: np.ndarray,
    block: np.ndarray,
    segments: int,
    min_fragments: int = MIN_FRAGMENTS,
) -> np.ndarray:
    """(segments, len(THETAS)): (1 - E[exp(-theta F)]) / E[F] over the fragments, i.e. the
    (segment, session, block) groups of events; NaN where a segment has too few fragments.

    Args:
        segment: segment index of each event (-1: none of the scored segments).
        session: session code of each event (any integer id).
        block: index of the window-long block each event falls in.
    """
    out = np.full((segments, len(THETAS)), np.nan)
    ok = segment >= 0
    if not ok.any():
        return out
    seg, sess, blk = segment[ok], session[ok].astype(np.int64), block[ok].astype(np.int64)
    # one integer per (segment, session, block): ranks keep each part small enough to pack
    sess_r = np.unique(sess, return_inverse=True)[1].astype(np.int64)
    blk_r = np.unique(blk, return_inverse=True)[1].astype(np.int64)
    key = (seg.astype(np.int64) * (sess_r.max() + 1) + sess_r) * (blk_r.max() + 1) + blk_r
    _, first, sizes = np.unique(key, return_index=True, return_counts=True)
    owner = seg[first]
    count = np.bincount(owner, minlength=segments).astype(float)
    events = np.bincount(owner, weights=sizes, minlength=segments)
    for j, theta in enumerate(THETAS):
        lost = np.bincount(owner, weights=1.0 - np.exp(-theta * sizes), minlength=segments)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where(count >= min_fragments, lost / events, np.nan)
    return out


def compound_lower_tail(
    x: np.ndarray, mu: np.ndarray, r2: np.ndarray, exponent: np.ndarray
) -> np.ndarray:
    """Chernoff bound on P(X <= x) for a compound Poisson count of mean mu (gamma-mixed with
    relative variance r2) whose parts have the measured `exponent` (..., len(THETAS)) =
    (1 - phi(theta)) / m; 1 where the bound says nothing. NaN in `exponent` gives NaN."""
    x, mu, r2 = (np.asarray(a, dtype=float)[..., None] for a in (x, mu, r2))
    r2 = np.maximum(r2, 1e-9)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        log_mgf = -np.log1p(r2 * mu * exponent) / r2
        bound = np.min(THETAS * x + log_mgf, axis=-1)
    return np.exp(np.minimum(bound, 0.0))
