"""Incremental build: `build` with no dates redoes only the dates whose bronze changed, and every
table it leaves equals a full rebuild of the same bronze: after random ingests, re-ingests of
changed files, late files and empty files, and after a kill at every commit boundary."""

from __future__ import annotations

import random
import shutil
import signal
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import cli, row, write_csv
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from funnelpulse import Pipeline, tables
from funnelpulse.engines.base import MODELS
from funnelpulse.errors import InputError
from funnelpulse.funnel import GOLD_FUNNELS
from funnelpulse.incremental import runs_of

BUILT = [m.name for m in MODELS] + list(GOLD_FUNNELS)
FIRST = date(2019, 10, 1)


def day_rows(rng: random.Random, day: date, n: int, tag: str) -> list[str]:
    """n events on `day`: sessions that view, some cart and buy, some crossing midnight."""
    out = []
    for i in range(n):
        start = datetime(day.year, day.month, day.day) + timedelta(seconds=rng.randrange(86_400))
        session = f"{tag}-{i}"
        brand = f"b{rng.randrange(4)}"
        product = rng.randrange(1, 6)
        user = rng.randrange(1, 50)
        price = f"{rng.choice([3, 15, 45, 80])}.{rng.randrange(100):02d}"
        steps = ["view"] + (["cart"] if rng.random() < 0.4 else [])
        if len(steps) == 2 and rng.random() < 0.5:
            steps.append("purchase")
        for k, kind in enumerate(steps):
            ts = (start + timedelta(minutes=20 * k)).strftime("%Y-%m-%d %H:%M:%S")
            out.append(row(ts, kind, product, brand, price, user, session))
    return out


def snapshot(warehouse: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every built table's rows, sorted, floats rounded (sums may add in another order)."""
    out = {}
    for name in BUILT:
        data = tables.read(tables.table_path(warehouse, name)).to_pylist()
        rows = [
            tuple((k, round(v, 6) if isinstance(v, float) else v) for k, v in sorted(r.items()))
            for r in data
        ]
        out[name] = sorted(rows, key=repr)
    return out


def assert_equals_full_rebuild(warehouse: Path, scratch: Path) -> None:
    copy = scratch / f"full-{len(list(scratch.iterdir()))}"
    shutil.copytree(warehouse, copy)
    Pipeline(warehouse=str(copy)).build(full=True)
    incremental, full = snapshot(str(warehouse)), snapshot(str(copy))
    for name in BUILT:
        assert incremental[name] == full[name], name
    shutil.rmtree(copy)


def test_runs_join_dates_whose_padding_would_overlap() -> None:
    d = date(2019, 10, 1)
    days = [d, d + timedelta(1), d + timedelta(3), d + timedelta(10)]
    assert runs_of(days, 3) == [(d, d + timedelta(3)), (d + timedelta(10), d + timedelta(10))]
    assert runs_of([], 3) == []


def test_a_new_day_rebuilds_only_that_day_and_its_neighbours(tmp_path: Path) -> None:
    rng = random.Random(1)
    raw = tmp_path / "raw"
    raw.mkdir()
    wh = tmp_path / "wh"
    p = Pipeline(warehouse=str(wh))
    history = [FIRST + timedelta(d) for d in range(10)]
    p.ingest(
        [write_csv(raw / "hist.csv", [r for d in history for r in day_rows(rng, d, 30, str(d))])]
    )
    first = p.build()
    assert first.dates == history  # no record yet: everything

    assert p.build().rows == {}  # nothing changed: nothing written

    new_day = FIRST + timedelta(10)
    late = FIRST + timedelta(2)
    p.ingest(
        [
            write_csv(
                raw / "day11.csv",
                day_rows(rng, new_day, 30, "new") + day_rows(rng, late, 5, "late"),
            )
        ]
    )
    result = p.build()
    # One span from the late date (or a neighbour sharing a session) to the new day, nothing
    # before it: each table gets one commit, so readers never see half of a build.
    assert {late, new_day} <= set(result.dates)
    assert min(result.dates) >= late - timedelta(1)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_equals_full_rebuild(wh, scratch)


STEP = st.one_of(
    st.tuples(st.just("new"), st.integers(0, 11), st.integers(1, 25)),
    st.tuples(st.just("replace"), st.integers(0, 11), st.integers(1, 25)),
    st.tuples(st.just("late"), st.integers(0, 11), st.integers(1, 5)),
    st.tuples(st.just("empty"), st.just(0), st.just(0)),
    st.tuples(st.just("full"), st.just(0), st.just(0)),
)


@pytest.mark.slow
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # each example builds many times: no long shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, min_size=2, max_size=5), seed=st.integers(0, 10_000))
def test_random_ingests_then_incremental_build_equal_a_full_rebuild(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, int]], seed: int
) -> None:
    base = tmp_path_factory.mktemp("prop")
    raw, scratch, wh = base / "raw", base / "scratch", base / "wh"
    raw.mkdir()
    scratch.mkdir()
    rng = random.Random(seed)
    p = Pipeline(warehouse=str(wh))
    p.ingest([write_csv(raw / "base.csv", day_rows(rng, FIRST, 10, "base"))])
    p.build()
    for i, (kind, offset, n) in enumerate(steps):
        day = FIRST + timedelta(offset)
        if kind == "new":
            p.ingest([write_csv(raw / f"f{i}.csv", day_rows(rng, day, n, f"s{i}"))])
        elif kind == "replace":  # the same file name with other content: its old rows go
            p.ingest([write_csv(raw / "base.csv", day_rows(rng, day, n, f"r{i}"))])
        elif kind == "late":
            p.ingest([write_csv(raw / f"late{i}.csv", day_rows(rng, day, n, f"l{i}"))])
        elif kind == "empty":  # refused as a whole, so bronze and the build are unchanged
            with pytest.raises(InputError, match="has a header but no data rows"):
                p.ingest([write_csv(raw / f"empty{i}.csv", [])])
        if kind == "full":
            p.build(full=True)
        else:
            p.build()
        assert_equals_full_rebuild(wh, scratch)


@pytest.mark.faults
@pytest.mark.parametrize(
    "point",
    [
        "build.journal_written",
        "build.silver_committed",
        "build.gold_committed",
        "build.all_committed",
        "build.state_written",
    ],
)
def test_incremental_build_killed_at_each_boundary_then_rebuilt_equals_full(
    tmp_path: Path, point: str
) -> None:
    rng = random.Random(7)
    raw = tmp_path / "raw"
    raw.mkdir()
    wh = tmp_path / "wh"
    days = [FIRST + timedelta(d) for d in range(6)]
    hist = write_csv(raw / "hist.csv", [r for d in days for r in day_rows(rng, d, 20, str(d))])
    assert cli(wh, "ingest", str(hist)).returncode == 0
    assert cli(wh, "build").returncode == 0
    new = write_csv(
        raw / "new.csv",
        day_rows(rng, FIRST + timedelta(6), 20, "new") + day_rows(rng, FIRST, 4, "late"),
    )
    assert cli(wh, "ingest", str(new)).returncode == 0
    assert cli(wh, "build", kill_at=point).returncode == -signal.SIGKILL
    again = cli(wh, "build")
    assert again.returncode == 0, again.stderr
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_equals_full_rebuild(wh, scratch)
    # A later build finds nothing left to do: what was built is recorded once it is all built.
    assert "Nothing to build" in cli(wh, "build").stdout


def test_a_late_view_that_moves_a_long_sessions_entry_far_back_stays_exact(tmp_path: Path) -> None:
    """A session first seen on day 9 gets a late view dated day 2: its entry date moves a week
    back, so the session funnel row of day 9, far from the changed date, must lose it."""
    raw = tmp_path / "raw"
    raw.mkdir()
    wh = tmp_path / "wh"
    p = Pipeline(warehouse=str(wh))
    rng = random.Random(3)
    history = [r for d in range(10) for r in day_rows(rng, FIRST + timedelta(d), 8, f"h{d}")]
    history += [
        row("2019-10-10 10:00:00", "view", 1, "b1", "5.00", 77, "long"),
        row("2019-10-10 10:05:00", "cart", 1, "b1", "5.00", 77, "long"),
    ]
    p.ingest([write_csv(raw / "hist.csv", history)])
    p.build()
    p.ingest(
        [
            write_csv(
                raw / "late.csv", [row("2019-10-03 09:00:00", "view", 1, "b1", "5.00", 77, "long")]
            )
        ]
    )
    result = p.build()
    assert date(2019, 10, 10) in result.dates  # the session's old entry date was rebuilt too
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_equals_full_rebuild(wh, scratch)
