"""Lower tails from session fragments: the bound holds for any part-size distribution (checked
against the exact compound Poisson law), is exact for a complete break, and the parts are
counted exactly from events."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from funnelpulse.anomaly.fragments import THETAS, compound_lower_tail, fragment_exponents


def exponent_of(sizes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(1 - E[exp(-theta F)]) / E[F] of a size law (sizes >= 1 with probabilities)."""
    m = float(np.sum(sizes * probs))
    return np.array([np.sum(probs * (1 - np.exp(-t * sizes))) / m for t in THETAS])


def compound_cdf(lam: float, sizes: np.ndarray, probs: np.ndarray, upto: int) -> np.ndarray:
    """Exact P(X <= x), x = 0..upto, for X a Poisson(lam) sum of parts (Panjer's recursion)."""
    f = np.zeros(upto + 1)
    for s, p in zip(sizes, probs, strict=True):
        if s <= upto:
            f[int(s)] += p
    g = np.zeros(upto + 1)
    g[0] = np.exp(-lam)
    for x in range(1, upto + 1):
        j = np.arange(1, x + 1)
        g[x] = lam / x * np.sum(j * f[j] * g[x - j])
    return np.cumsum(g)


LAWS = {
    "single items": (np.array([1]), np.array([1.0])),
    "baskets of 9 (geometric)": (
        np.arange(1, 200),
        stats.geom.pmf(np.arange(1, 200), 1 / 9) / stats.geom.cdf(199, 1 / 9),
    ),
    "pairs and big baskets": (np.array([2, 30]), np.array([0.9, 0.1])),
}


@pytest.mark.parametrize("law", list(LAWS))
@pytest.mark.parametrize("mu", [20.0, 80.0, 300.0])
def test_the_bound_is_never_below_the_exact_tail(law: str, mu: float) -> None:
    sizes, probs = LAWS[law]
    m = float(np.sum(sizes * probs))
    exact = compound_cdf(mu / m, sizes, probs, int(mu))
    xs = np.arange(0, int(mu))
    bound = compound_lower_tail(
        xs, np.full(len(xs), mu), np.zeros(len(xs)), exponent_of(sizes, probs)
    )
    assert (bound >= exact[xs] * (1 - 1e-9)).all()
    # and it is a useful bound: at a complete break it is the exact chance of no part at all
    assert bound[0] == pytest.approx(np.exp(-mu / m), rel=1e-6)
    assert exact[0] == pytest.approx(np.exp(-mu / m), rel=1e-9)


def test_an_uncertain_expectation_widens_the_bound_as_a_gamma_mixture_does() -> None:
    sizes, probs = LAWS["baskets of 9 (geometric)"]
    m = float(np.sum(sizes * probs))
    e = exponent_of(sizes, probs)
    sure = compound_lower_tail(np.array([0.0]), np.array([90.0]), np.array([0.0]), e)[0]
    unsure = compound_lower_tail(np.array([0.0]), np.array([90.0]), np.array([0.05]), e)[0]
    assert unsure == pytest.approx((1 + 0.05 * 90 / m) ** (-1 / 0.05), rel=1e-6)
    assert unsure > sure


def test_single_items_reduce_to_the_poisson_chernoff_bound() -> None:
    e = exponent_of(np.array([1]), np.array([1.0]))
    x, mu = np.array([10.0]), np.array([40.0])
    bound = compound_lower_tail(x, mu, np.zeros(1), e)[0]
    chernoff = np.exp(-(40 * 1 - 10 + 10 * np.log(10 / 40)))  # exp(-mu h(x/mu))
    assert stats.poisson.cdf(10, 40) <= bound <= chernoff * 1.01


def test_fragments_are_counted_per_segment_session_and_block() -> None:
    # segment 0: session 7 has 3 events in block 0 and 1 in block 1, session 8 one in block 0;
    # segment 1: session 7 has 2 events in block 0 (the same session, another segment's part)
    segment = np.array([0, 0, 0, 0, 0, 1, 1, -1])
    session = np.array([7, 7, 7, 7, 8, 7, 7, 9])
    block = np.array([0, 0, 0, 1, 0, 0, 0, 0])
    out = fragment_exponents(segment, session, block, 3, min_fragments=1)
    sizes0 = np.array([3, 1, 1])  # parts of segment 0: 5 events
    want0 = np.array([np.sum(1 - np.exp(-t * sizes0)) / 5 for t in THETAS])
    np.testing.assert_allclose(out[0], want0)
    np.testing.assert_allclose(out[1], [(1 - np.exp(-t * 2)) / 2 for t in THETAS])
    assert np.isnan(out[2]).all()  # no events: not measured
    # too few parts for the default minimum: not measured either
    assert np.isnan(fragment_exponents(segment, session, block, 3)).all()
