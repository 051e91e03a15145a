"""The generator's shop shapes, checked statistically: basket sizes, trend, drift, promotions,
and the ideal test's variance summed over sessions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from funnelpulse.generate import (
    PLAIN,
    REAL,
    Incident,
    Shape,
    _pair_sum,
    generate_labelled,
    ranked_brands,
)

START = datetime(2019, 10, 1, tzinfo=UTC)


def _orders(table: pa.Table) -> np.ndarray:
    """Purchase events per session that bought anything."""
    con = duckdb.connect()
    con.register("e", table)
    rows = con.sql(
        """SELECT count(*) FROM e WHERE event_type = 'purchase' GROUP BY user_session"""
    ).fetchall()
    return np.array([r[0] for r in rows])


@pytest.mark.parametrize("mean", [3.0, 9.0])
def test_baskets_have_the_asked_mean_and_a_geometric_shape(mean: float) -> None:
    table, _ = generate_labelled(80_000, seed=3, days=7, shape=replace(PLAIN, basket_mean=mean))
    sizes = _orders(table)
    assert len(sizes) > 500
    # Sampling exactly `rows` events and duplicate events move the mean a little, not more.
    assert abs(sizes.mean() - mean) < 0.12 * mean
    # Shifted geometric: P(one item) = 1 / mean (the real sample: 0.105 at mean 9.1).
    single = (sizes == 1).mean()
    assert abs(single - 1 / mean) < 0.35 / mean


def test_plain_shape_buys_items_one_by_one() -> None:
    table, _ = generate_labelled(80_000, seed=3, days=7, shape=PLAIN)
    sizes = _orders(table)
    # Independent decisions per item: most orders hold one item, none of them large.
    assert (sizes == 1).mean() > 0.6
    assert sizes.mean() < 1.8


def test_growth_moves_daily_traffic_by_the_asked_amount() -> None:
    days = 28
    table, _ = generate_labelled(200_000, seed=4, days=days, shape=replace(PLAIN, growth=0.6))
    day = (
        (table.column("event_time").cast(pa.int64()).to_numpy() // 1_000_000 - START.timestamp())
        // 86400
    ).astype(int)
    per_day = np.bincount(day, minlength=days)[:days].astype(float)
    slope, intercept, *_ = stats.linregress(np.arange(days), per_day)
    # Level 1 + 0.6 d / (days - 1): the fitted last day is 1.6 times the first, within noise
    # (the weekly cycle adds a little).
    ratio = (intercept + slope * (days - 1)) / intercept
    assert 1.45 < ratio < 1.75
    flat, _ = generate_labelled(200_000, seed=4, days=days, shape=PLAIN)
    flat_day = (
        (flat.column("event_time").cast(pa.int64()).to_numpy() // 1_000_000 - START.timestamp())
        // 86400
    ).astype(int)
    flat_slope = stats.linregress(
        np.arange(days), np.bincount(flat_day, minlength=days)[:days]
    ).slope
    assert abs(flat_slope * (days - 1)) < 0.08 * per_day.mean()


def _daily_dispersion(table: pa.Table, brand: str) -> float:
    """Pearson dispersion of one brand's daily cart-per-view rate across days (1 = binomial)."""
    con = duckdb.connect()
    con.register("e", table)
    rows = con.sql(
        f"""SELECT date_trunc('day', event_time) d,
                   count(*) FILTER (WHERE event_type = 'view') v,
                   count(*) FILTER (WHERE event_type = 'cart') c
            FROM e WHERE brand = '{brand}' GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    v = np.array([r[1] for r in rows], float)
    c = np.array([r[2] for r in rows], float)
    p = c.sum() / v.sum()
    # carts can exceed views a little (duplicates); the binomial variance at p is the yardstick
    return float(np.sum((c - v * p) ** 2 / (v * p * max(1 - p, 0.05))) / (len(v) - 1))


def test_drift_moves_each_brands_rates_from_day_to_day() -> None:
    top = ranked_brands(250, 6)[0]
    plain, _ = generate_labelled(200_000, seed=6, days=14, shape=PLAIN)
    drifting, _ = generate_labelled(200_000, seed=6, days=14, shape=replace(PLAIN, drift=0.1))
    # Binomial noise only without drift (dispersion under the 99.9% chi-square bound); with
    # a drift of 0.1 in log odds a day, a dispersion that binomial noise reaches < 0.1% of the time.
    bound = stats.chi2.ppf(0.999, 13) / 13
    assert _daily_dispersion(plain, top) < bound
    assert _daily_dispersion(drifting, top) > 1.3 * bound


def test_promotion_days_are_labelled_and_busier() -> None:
    table, labels = generate_labelled(
        150_000, seed=8, days=20, shape=replace(PLAIN, promo_days=1.5)
    )
    promos = [lab for lab in labels if lab.kind == "promotion"]
    assert promos and all(p.ideal_z is None and p.hours == 24 for p in promos)
    day = (
        (table.column("event_time").cast(pa.int64()).to_numpy() // 1_000_000 - START.timestamp())
        // 86400
    ).astype(int)
    per_day = np.bincount(day, minlength=20)[:20].astype(float)
    promo_days = {int((p.start - START).total_seconds() // 86400) for p in promos}
    others = np.median([per_day[d] for d in range(20) if d not in promo_days])
    for d in promo_days:
        assert 2.0 < per_day[d] / others < 3.0  # traffic x2.5


def test_real_shape_is_the_cli_default_and_plain_is_the_librarys() -> None:
    import inspect

    from funnelpulse.generate import generate_file

    assert inspect.signature(generate_file).parameters["shape"].default == REAL
    assert inspect.signature(generate_labelled).parameters["shape"].default == PLAIN
    assert PLAIN.stationary and not REAL.stationary
    assert REAL.basket_mean == 9.0


def test_pair_sum_matches_every_pair_counted_by_hand() -> None:
    rng = np.random.default_rng(1)
    session = rng.integers(0, 30, 200)
    p = rng.random(200)
    brute = sum(
        min(p[i], p[j]) - p[i] * p[j]
        for i in range(200)
        for j in range(200)
        if session[i] == session[j]
    )
    fast = _pair_sum(session, lambda i, j: np.minimum(p[i], p[j]) - p[i] * p[j])
    assert fast == pytest.approx(brute, rel=1e-9)


def test_ideal_z_of_a_basket_shop_counts_sessions() -> None:
    """The same cart drop is less detectable when carts come in baskets: the ideal z falls by
    about the square root of the clustering (E[B^2]/E[B] for the brand's items per session)."""
    brand = ranked_brands(250, 9)[0]
    drop = Incident(
        "inc01", "cart_drop", "brand", brand, "cart", START.replace(day=8, hour=10), 6, 0.5
    )
    _, plain = generate_labelled(300_000, seed=9, days=10, incidents=[drop], shape=PLAIN)
    _, basket = generate_labelled(
        300_000, seed=9, days=10, incidents=[drop], shape=Shape(basket_mean=9.0)
    )
    assert plain[0].ideal_z is not None and basket[0].ideal_z is not None
    assert plain[0].ideal_z < 0 and basket[0].ideal_z < 0
    assert abs(basket[0].ideal_z) < 0.8 * abs(plain[0].ideal_z)


def test_the_ideal_z_seen_scatters_around_the_expected_one() -> None:
    """`ideal_z_seen` is the ideal test's z on the events drawn: a full break shows exactly its
    expected z (nothing bought), the others scatter around theirs by about one standard unit."""
    brands = ranked_brands(250, 11)
    incidents = [
        Incident(
            f"inc{i:02d}",
            kind,
            "brand",
            brands[i % 3],
            step,
            START.replace(day=5 + i // 3, hour=9 + 5 * (i % 3)),
            4,
            factor,
        )
        for i, (kind, step, factor) in enumerate(
            [("checkout_broken", "purchase", 0.0)] * 3
            + [("checkout_partial", "purchase", 0.5), ("cart_drop", "cart", 0.6)] * 12
        )
    ]
    _, labels = generate_labelled(400_000, seed=11, days=20, incidents=incidents, shape=PLAIN)
    for lab in labels[:3]:
        assert lab.ideal_z_seen == lab.ideal_z
    gaps = np.array([lab.ideal_z_seen - lab.ideal_z for lab in labels[3:]])  # type: ignore[operator]
    assert abs(gaps.mean()) < 0.5, gaps
    assert 0.5 < gaps.std() < 1.5, gaps
