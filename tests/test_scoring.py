"""Pure scoring functions, with hypothesis properties."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from funnelpulse.anomaly import scoring

counts = arrays(
    np.int64,
    st.tuples(st.integers(1, 3), st.integers(24 * 4, 24 * 9)),
    elements=st.integers(0, 500),
)


@settings(max_examples=40, deadline=None)
@given(views=counts, data=st.data())
def test_no_score_uses_the_hour_itself_or_a_later_hour(
    views: np.ndarray, data: st.DataObject
) -> None:
    carts = np.minimum(
        views, data.draw(arrays(np.int64, views.shape, elements=st.integers(0, 500)))
    )
    t = data.draw(st.integers(0, views.shape[1] - 1))
    base = scoring.rate_baseline(carts, views, history_days=7)
    traffic = scoring.count_baseline(views, history_days=7)
    changed_views, changed_carts = views.copy(), carts.copy()
    changed_views[:, t:] = changed_views[:, t:] * 3 + 7
    changed_carts[:, t:] = 0
    after = scoring.rate_baseline(changed_carts, changed_views, history_days=7)
    after_traffic = scoring.count_baseline(changed_views, history_days=7)
    np.testing.assert_array_equal(base.expected[:, : t + 1], after.expected[:, : t + 1])
    np.testing.assert_array_equal(traffic.expected[:, : t + 1], after_traffic.expected[:, : t + 1])


def test_baseline_is_the_same_hour_on_past_days() -> None:
    hours = 24 * 6
    views = np.full((1, hours), 100)
    carts = np.where(np.arange(hours) % 24 == 5, 50, 10)[None, :]
    base = scoring.rate_baseline(carts, views, history_days=5)
    assert np.isnan(base.expected[0, 5 + 24 * 2])  # only 2 past days: not enough history
    assert base.expected[0, 5 + 24 * 4] == 0.5  # hour 5 is always 50%
    assert base.expected[0, 6 + 24 * 4] == 0.1


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(20, 2_000),
    p=st.floats(0.05, 0.6),
    change=st.floats(0.3, 0.9),
    scale=st.integers(2, 50),
    rho=st.floats(0.0, 0.05),
)
def test_more_trials_make_the_same_relative_change_more_significant(
    n: int, p: float, change: float, scale: int, rho: float
) -> None:
    observed = n * p * (1 - change)
    small = scoring.rate_z(np.array(observed), np.array(n), np.array(p), rho)
    large = scoring.rate_z(np.array(observed * scale), np.array(n * scale), np.array(p), rho)
    assert small < 0 and large < 0
    assert abs(large) > abs(small)


def test_overdispersion_is_estimated_from_history() -> None:
    rng = np.random.default_rng(1)
    hours = 24 * 15
    views = np.full((2, hours), 1000)
    steady = rng.binomial(1000, 0.3, hours)
    wobbly_rate = np.clip(0.3 + rng.normal(0, 0.08, hours), 0.01, 0.99)
    wobbly = rng.binomial(1000, wobbly_rate)
    base = scoring.rate_baseline(np.vstack([steady, wobbly]), views, history_days=14)
    assert base.rho[0, 0] < 0.001
    assert base.rho[1, 0] > 0.01
    # the same drop is less surprising in the segment that always wobbles
    z = scoring.rate_z(
        np.array([200, 200]), np.array([1000, 1000]), np.array([0.3, 0.3]), base.rho[:, 0]
    )
    assert z[0] < z[1] < 0


def test_a_past_incident_does_not_poison_the_baseline() -> None:
    hours = 24 * 10
    views = np.full((1, hours), 1000)
    purchases = np.full((1, hours), 200)
    purchases[0, 24 * 3 + 7] = 10  # an incident three days ago at 07:00
    base = scoring.rate_baseline(purchases, views, history_days=7)
    assert base.expected[0, 24 * 8 + 7] == 0.2


def test_traffic_score_and_severity() -> None:
    hours = 24 * 8
    views = np.full((1, hours), 500.0)
    views[0, -1] = 50
    base = scoring.count_baseline(views, history_days=7)
    z = scoring.count_z(views, base.expected, base.cv)
    assert z[0, -1] < -6
    assert abs(z[0, -2]) < 1
    assert list(scoring.severity(np.array([2.0, -4.5, 7.0, -12.0]))) == [
        "low",
        "medium",
        "high",
        "critical",
    ]
