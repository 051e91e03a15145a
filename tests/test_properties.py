"""Properties over generated data: gold sums equal silver counts, whatever the input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelpulse import Pipeline, generate_events, tables, write_events
from funnelpulse.anomaly.detect import seasonal
from funnelpulse.anomaly.scoring import STEPS, rate_baseline, scan_rate
from funnelpulse.anomaly.series import Series
from funnelpulse.config import Settings


@pytest.mark.slow
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), rows=st.integers(50, 3_000), days=st.integers(1, 3))
def test_gold_sums_equal_silver_counts(tmp_path_factory, seed: int, rows: int, days: int) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("prop")
    path = write_events(
        generate_events(rows, seed=seed, days=days, brands=20), folder / "events.csv"
    )
    p = Pipeline(warehouse=str(folder / "wh"))
    p.ingest([path])
    p.build()
    silver = p.table(tables.SILVER)
    counts = {
        t: pc.sum(pc.equal(silver["event_type"], t)).as_py() for t in ("view", "cart", "purchase")
    }
    revenue = pc.sum(
        pc.if_else(pc.equal(silver["event_type"], "purchase"), silver["price"], 0.0)
    ).as_py()
    for name in (
        tables.GOLD_HOURLY_BRAND,
        tables.GOLD_DAILY_BRAND,
        tables.GOLD_DAILY_CATEGORY,
        tables.GOLD_HOURLY_PRICE_BAND,
    ):
        gold = p.table(name)
        assert pc.sum(gold["views"]).as_py() == counts["view"], name
        assert pc.sum(gold["carts"]).as_py() == counts["cart"], name
        assert pc.sum(gold["purchases"]).as_py() == counts["purchase"], name
        assert abs(pc.sum(gold["revenue"]).as_py() - revenue) < 1e-6 * max(1.0, revenue), name
    # silver never keeps a non-positive price and never keeps two rows with the same key
    assert pc.min(silver["price"]).as_py() > 0
    keys = silver.select(["event_time", "user_id", "user_session", "product_id", "event_type"])
    assert keys.group_by(keys.column_names).aggregate([]).num_rows == silver.num_rows


def test_generator_is_deterministic_and_realistic() -> None:
    a = generate_events(20_000, seed=3)
    b = generate_events(20_000, seed=3)
    c = generate_events(20_000, seed=4)
    assert a.equals(b)
    assert not a.equals(c)
    assert a.num_rows == 20_000
    null_brand = pc.mean(pc.is_null(a["brand"]).cast("float64")).as_py()
    null_category = pc.mean(pc.is_null(a["category_code"]).cast("float64")).as_py()
    assert 0.3 < null_brand < 0.5
    assert null_category > 0.95
    assert pc.count_distinct(a["brand"]).as_py() > 100
    assert 0 < pc.sum(pc.equal(a["price"], 0.0)).as_py() < 0.01 * a.num_rows
    times = a["event_time"]
    assert pc.all(
        pc.greater_equal(times.slice(1), times.slice(0, a.num_rows - 1))
    ).as_py()  # sorted
    start, end = pc.min(times).as_py(), pc.max(times).as_py()
    assert start >= datetime(2019, 10, 1, tzinfo=UTC) and end < datetime(2019, 12, 1, tzinfo=UTC)
    keys = a.select(a.column_names)
    duplicates = a.num_rows - keys.group_by(keys.column_names).aggregate([]).num_rows
    assert 0.02 * a.num_rows < duplicates < 0.08 * a.num_rows
    types = {t: pc.sum(pc.equal(a["event_type"], t)).as_py() for t in ("view", "cart", "purchase")}
    assert types["view"] > types["cart"] > types["purchase"] > 0


def test_generated_file_roundtrip(tmp_path: Path) -> None:
    table = generate_events(1_000, seed=1, days=2)
    for name in ("e.csv", "e.csv.gz", "e.parquet"):
        p = Pipeline(warehouse=str(tmp_path / f"wh-{name}"))
        result = p.ingest([write_events(table, tmp_path / name)])
        assert result.bronze_rows == 1_000 and result.quarantined_rows == 0


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.sampled_from([b"", b"x", b"a,b", b" "]), st.sampled_from([b"\n", b"\r\n"])),
        max_size=40,
    ),
    tail=st.sampled_from([b"", b"last"]),
    chunk=st.sampled_from([1, 2, 3, 5, 1 << 20]),
)
def test_blank_lines_are_found_whatever_the_chunking(
    tmp_path_factory, lines: list[tuple[bytes, bytes]], tail: bytes, chunk: int
) -> None:  # type: ignore[no-untyped-def]
    from funnelpulse.ingest import _blank_lines

    data = b"".join(text + end for text, end in lines) + tail
    path = tmp_path_factory.mktemp("blank") / "f.csv"
    path.write_bytes(data)
    expected = [number for number, (text, _) in enumerate(lines, start=1) if text == b""]
    assert _blank_lines(path, chunk=chunk) == expected


def _funnel(rng: np.random.Generator, segments: int, hours: int, scale: float) -> Series:
    """Random hourly funnels with a daily cycle and, sometimes, a broken stretch."""
    size = rng.uniform(5, scale, (segments, 1))
    cycle = 1 + 0.6 * np.sin(2 * np.pi * np.arange(hours) / 24)
    views = rng.poisson(size * cycle).astype(float)
    carts = rng.binomial(views.astype(int), rng.uniform(0.2, 0.7, (segments, 1))).astype(float)
    purchases = rng.binomial(carts.astype(int), rng.uniform(0.1, 0.6, (segments, 1))).astype(float)
    if rng.random() < 0.7:
        s, t = rng.integers(0, segments), rng.integers(hours // 2, hours)
        purchases[s, t : t + rng.integers(1, 8)] = 0
    start = np.datetime64("2019-10-01T00:00", "us")
    return Series(
        hours=start + np.arange(hours) * np.timedelta64(1, "h"),
        dimension=["shop"] + ["brand"] * (segments - 1),
        segment=["all"] + [f"b{i}" for i in range(1, segments)],
        values={
            "views": views,
            "carts": carts,
            "purchases": purchases,
            "revenue": purchases * 12.5,
        },
    )


def _cut(series: Series, hours: int) -> Series:
    return Series(
        series.hours[:hours],
        series.dimension,
        series.segment,
        {k: v[:, :hours] for k, v in series.values.items()},
    )


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    segments=st.integers(1, 6),
    days=st.integers(4, 12),
    extra=st.integers(1, 60),
    scale=st.sampled_from([20.0, 300.0, 3000.0]),
)
def test_no_look_ahead_scores_never_change_when_later_hours_arrive(
    seed: int, segments: int, days: int, extra: int, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    full = _funnel(rng, segments, days * 24 + extra, scale)
    cut = days * 24
    settings_ = Settings(false_alarms_per_week=50.0)  # a loose budget, so rows do appear
    early = [_comparable(r) for r in seasonal(_cut(full, cut), settings_)]
    later = [
        _comparable(r)
        for r in seasonal(full, settings_)
        if r["window_end"]
        <= full.hours[cut - 1].astype(datetime).replace(tzinfo=UTC) + timedelta(hours=1)
    ]
    assert early == later
    for name, (num, den) in STEPS.items():
        v = full.values
        base_full = rate_baseline(v[num], v[den], 14)
        base_cut = rate_baseline(v[num][:, :cut], v[den][:, :cut], 14)
        a = scan_rate(v[num], v[den], base_full, alpha=1e-3, min_change=0.25, min_trials=20)
        b = scan_rate(
            v[num][:, :cut], v[den][:, :cut], base_cut, alpha=1e-3, min_change=0.25, min_trials=20
        )
        for field in ("fired", "window", "p", "z", "observed", "expected"):
            np.testing.assert_array_equal(getattr(a, field)[:, :cut], getattr(b, field), name)


def _comparable(row: dict) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in row.items() if k != "detected_at"}
