"""Pure scoring functions: baselines, exact tails, window scans, the false-alarm budget."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from funnelpulse.anomaly import scoring

counts = arrays(
    np.int64,
    st.tuples(st.integers(1, 3), st.integers(24 * 4, 24 * 9)),
    elements=st.integers(0, 500),
)


@settings(max_examples=40, deadline=None)
@given(views=counts, data=st.data())
def test_no_baseline_uses_the_hour_itself_or_a_later_hour(
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
    for a, b in ((base, after), (traffic, after_traffic)):
        for name in ("expected", "days"):
            np.testing.assert_array_equal(
                getattr(a, name)[:, : t + 1], getattr(b, name)[:, : t + 1]
            )
    np.testing.assert_array_equal(base.rho[:, : t + 1], after.rho[:, : t + 1])
    np.testing.assert_array_equal(traffic.cv[:, : t + 1], after_traffic.cv[:, : t + 1])


def test_baseline_is_the_same_hour_on_past_days_shrunk_only_slightly() -> None:
    hours = 24 * 6
    views = np.full((1, hours), 100)
    carts = np.where(np.arange(hours) % 24 == 5, 50, 10)[None, :]
    base = scoring.rate_baseline(carts, views, history_days=5)
    assert np.isnan(base.expected[0, 5 + 24 * 2])  # only 2 past days: not enough history
    # 4 past days x 100 views at 50%, plus 10 pseudo-views of the all-hours rate (~11.7%)
    assert abs(base.expected[0, 5 + 24 * 4] - (200 + 10 * 0.1167) / 410) < 1e-3
    assert abs(base.expected[0, 6 + 24 * 4] - 0.1) < 2e-3


def test_a_baseline_of_zero_successes_still_expects_some() -> None:
    hours = 24 * 8
    views = np.full((2, hours), 20)
    carts = np.full((2, hours), 4)
    carts[0, np.arange(hours) % 24 == 3] = 0  # brand 0 never carts at 03:00
    base = scoring.rate_baseline(carts, views, history_days=7)
    at3 = base.expected[0, 24 * 7 + 3]
    assert 0 < at3 < 0.05  # small, not zero: 0 of 140 views, pulled a little towards 20%
    low, high = scoring.rate_tails(np.array(3.0), np.array(20.0), np.array(at3), np.array(0.0))
    z = scoring.z_of(high, np.array(1.0))
    assert np.isfinite(z) and 2 < z < 5  # a modest surprise, not z = +8944


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    p=st.floats(0.01, 0.95),
    data=st.data(),
)
def test_tails_are_the_exact_binomial_without_overdispersion(n: int, p: float, data) -> None:  # type: ignore[no-untyped-def]
    x = data.draw(st.integers(0, n))
    low, high = scoring.rate_tails(
        np.array(float(x)), np.array(float(n)), np.array(p), np.array(0.0)
    )
    assert abs(low - stats.binom.cdf(x, n, p)) < 1e-6 + 1e-3 * stats.binom.cdf(x, n, p)
    assert abs(high - stats.binom.sf(x - 1, n, p)) < 1e-6 + 1e-3 * stats.binom.sf(x - 1, n, p)
    blow, bhigh = scoring.binomial_tails(np.array(float(x)), np.array(float(n)), np.array(p))
    assert abs(blow - low) < 1e-6 and abs(bhigh - high) < 1e-6


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(5, 3000),
    p=st.floats(0.02, 0.7),
    shrink=st.floats(0.0, 2.0),
    icc=st.floats(0.001, 0.2),
    alpha=st.sampled_from([1e-4, 1e-6, 1e-8]),
)
def test_the_binomial_screen_never_drops_a_cell_the_exact_tail_would_fire(
    n: int, p: float, shrink: float, icc: float, alpha: float
) -> None:
    # Overdispersion makes far tails heavier: if the beta-binomial tail is below alpha, so is
    # the plain binomial one, which is what lets the scan screen cells cheaply.
    x = np.minimum(np.floor(n * p * shrink), n)
    plain = scoring.binomial_tails(np.array(x), np.array(float(n)), np.array(p))
    wide = scoring.rate_tails(np.array(x), np.array(float(n)), np.array(p), np.array(icc))
    for side in (0, 1):
        if wide[side] < alpha:
            assert plain[side] < alpha


def test_counts_use_negative_binomial_tails() -> None:
    low, high = scoring.count_tails(np.array(3.0), np.array(10.0), np.array(1e-9))
    assert abs(low - stats.poisson.cdf(3, 10)) < 1e-6
    assert abs(high - stats.poisson.sf(2, 10)) < 1e-6
    r2 = 0.1
    size = 1 / r2
    low, _ = scoring.count_tails(np.array(3.0), np.array(10.0), np.array(r2))
    assert abs(low - stats.nbinom.cdf(3, size, size / (size + 10))) < 1e-9


def test_window_sums_trail_and_refuse_holes() -> None:
    x = np.array([[1.0, 2.0, 3.0, np.nan, 5.0, 6.0]])
    np.testing.assert_array_equal(
        scoring.window_sum(x, 2), [[np.nan, 3.0, 5.0, np.nan, np.nan, 11.0]]
    )
    np.testing.assert_array_equal(scoring.window_sum(x, 1), x)


def _steady(
    rng: np.random.Generator, days: int, carts: int, p: float
) -> tuple[np.ndarray, np.ndarray]:
    den = np.full((1, days * 24), carts)
    return rng.binomial(den, p).astype(float), den.astype(float)


def test_two_hour_checkout_break_is_caught_by_a_longer_window_only() -> None:
    # The example: 3 of 35 carts, then 6 of 37, against ~45% normally.
    rng = np.random.default_rng(5)
    num, den = _steady(rng, 16, 36, 0.45)
    t = 15 * 24 + 12
    den[0, t : t + 2] = [35, 37]
    num[0, t : t + 2] = [3, 6]
    base = scoring.rate_baseline(num, den, history_days=14)
    alpha = scoring.per_test_alpha(1.0, segments=200, steps=4, windows=len(scoring.WINDOWS))
    one = scoring.scan_rate(
        num, den, base, alpha=alpha, min_change=0.25, min_trials=20, windows=(1,)
    )
    many = scoring.scan_rate(num, den, base, alpha=alpha, min_change=0.25, min_trials=20)
    assert not one.fired[0, t : t + 2].any()
    assert many.fired[0, t + 1] and many.window[0, t + 1] == 2 and many.sign[0, t + 1] == -1
    assert many.observed[0, t + 1] == 9 and many.trials[0, t + 1] == 72
    assert many.z[0, t + 1] < -5
    # and once checkout works again, no window keeps firing
    assert not many.fired[0, t + 2 : t + 12].any()


def test_no_false_alarm_on_steady_data_across_many_segments() -> None:
    rng = np.random.default_rng(8)
    segments, days = 150, 21
    den = rng.poisson(rng.uniform(2, 300, (segments, 1)), (segments, days * 24)).astype(float)
    num = rng.binomial(den.astype(int), rng.uniform(0.1, 0.6, (segments, 1))).astype(float)
    base = scoring.rate_baseline(num, den, history_days=14)
    alpha = scoring.per_test_alpha(1.0, segments, steps=1, windows=len(scoring.WINDOWS))
    scan = scoring.scan_rate(num, den, base, alpha=alpha, min_change=0.25, min_trials=20)
    assert scan.fired.sum() == 0
    traffic = scoring.count_baseline(den, history_days=14)
    counted = scoring.scan_count(den, traffic, alpha=alpha, min_change=0.3, min_expected=50)
    assert counted.fired.sum() == 0


def test_per_test_alpha_spends_the_weekly_budget() -> None:
    alpha = scoring.per_test_alpha(1.0, segments=100, steps=4, windows=8)
    assert alpha * 100 * 4 * 8 * 168 * 2 == 1.0
    assert scoring.per_test_alpha(2.0, 100, 4, 8) == 2 * alpha


def test_severity() -> None:
    assert list(scoring.severity(np.array([2.0, -4.5, 7.0, -12.0]))) == [
        "low",
        "medium",
        "high",
        "critical",
    ]
    assert scoring.z_of(np.array(0.0), np.array(-1.0)) > -38


def test_a_handful_of_purchases_is_not_a_conversion_spike() -> None:
    # The false spikes: 6 purchases from 123 views against ~1 expected, 3 from 61.
    rng = np.random.default_rng(2)
    views = np.full((1, 16 * 24), 123.0)
    purchases = rng.binomial(123, 1 / 123, views.shape).astype(float)
    t = 15 * 24 + 9
    purchases[0, t] = 6
    base = scoring.rate_baseline(purchases, views, history_days=14)
    alpha = scoring.per_test_alpha(1.0, segments=200, steps=4, windows=len(scoring.WINDOWS))
    scan = scoring.scan_rate(purchases, views, base, alpha=alpha, min_change=0.25, min_trials=50)
    assert not scan.fired[0, t]
    # while 30 of 123 against the same ~1 expected is a spike no budget can explain away
    purchases[0, t] = 30
    base = scoring.rate_baseline(purchases, views, history_days=14)
    scan = scoring.scan_rate(purchases, views, base, alpha=alpha, min_change=0.25, min_trials=50)
    assert scan.fired[0, t] and scan.sign[0, t] == 1 and scan.z[0, t] > 10
