"""Incremental build and detect: `build` with no dates redoes only the dates whose bronze changed,
and `detect` re-scores only the hours those dates reach; every table they leave equals a full
rebuild and a full detect of the same bronze: after random ingests, re-ingests of changed files,
late files and empty files, and after a kill at every commit boundary."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
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
from funnelpulse.incremental import date_fingerprints, runs_of

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


def history_day(rng: random.Random, d: int, n: int) -> list[str]:
    """Day `d` of a history with something to detect: every 7th day, from the 6th, a burst of
    60 sessions of brand b1 that only look (4 hours of a traffic spike and a conversion drop)."""
    day = FIRST + timedelta(d)
    out = day_rows(rng, day, n, f"h{d}")
    if d % 7 == 5:
        for i in range(60):
            ts = datetime(day.year, day.month, day.day, 10) + timedelta(
                seconds=rng.randrange(14_400)
            )
            out.append(
                row(ts.strftime("%Y-%m-%d %H:%M:%S"), "view", 2, "b1", "15.00", 3, f"x{d}-{i}")
            )
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


def assert_equals_full_rebuild(
    warehouse: Path, scratch: Path, detect: dict[str, Any] | None = None
) -> None:
    """Every built table equals a full rebuild of a copy; with `detect` settings, the anomalies
    and incidents equal a full detect of it too."""
    copy = scratch / f"full-{len(list(scratch.iterdir()))}"
    shutil.copytree(warehouse, copy)
    Pipeline(warehouse=str(copy)).build(full=True)
    incremental, full = snapshot(str(warehouse)), snapshot(str(copy))
    for name in BUILT:
        assert incremental[name] == full[name], name
    if detect is not None:
        Pipeline(warehouse=str(copy), **detect).detect(full=True)
        for name, drop in DETECTED.items():
            assert detected(str(warehouse), name, drop) == detected(str(copy), name, drop), name
    shutil.rmtree(copy)


# Detection settings small data fires with: short baselines, a low floor, a liberal threshold.
DETECT: dict[str, Any] = {"history_days": 3, "min_views": 5, "false_alarms_per_week": 1000.0}
# The columns that say when a detect ran, not what it found.
DETECTED = {"anomalies": ("detected_at",), "incidents": ("updated_at", "first_recorded_at")}


def detected(warehouse: str, name: str, drop: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """A detection table's rows without `drop`, sorted, floats to 9 significant digits (an
    incremental detect sums a window from another first hour, so the last bits may differ)."""
    data = tables.read(tables.table_path(warehouse, name)).to_pylist()
    rows = [
        tuple(
            (k, float(f"{v:.9g}") if isinstance(v, float) else v)
            for k, v in sorted(r.items())
            if k not in drop
        )
        for r in data
    ]
    return sorted(rows, key=repr)


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
    # The late date (or a neighbour sharing a session) and the new day, nothing before them.
    assert {late, new_day} <= set(result.dates)
    assert min(result.dates) >= late - timedelta(1)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_equals_full_rebuild(wh, scratch)


def partitions(warehouse: str) -> dict[str, dict[str, str]]:
    """Per built table, per date partition, a fingerprint of the files that hold it."""
    columns = {m.name: m.partition_by for m in MODELS} | dict.fromkeys(GOLD_FUNNELS, "date")
    return {name: date_fingerprints(warehouse, name, columns[name]) for name in BUILT}


def test_late_events_far_back_and_a_new_day_rewrite_only_their_dates(tmp_path: Path) -> None:
    """Late events 20 days back and a new day are rebuilt in one pass that rewrites their dates
    (and the session funnels' neighbouring entry dates) and no date in between."""
    rng = random.Random(11)
    raw = tmp_path / "raw"
    raw.mkdir()
    wh = tmp_path / "wh"
    p = Pipeline(warehouse=str(wh))
    history = [r for d in range(30) for r in day_rows(rng, FIRST + timedelta(d), 12, f"h{d}")]
    p.ingest([write_csv(raw / "hist.csv", history)])
    p.build()
    before = partitions(str(wh))
    versions = {n: tables.version(tables.table_path(str(wh), n)) for n in BUILT}
    late, new_day = FIRST + timedelta(5), FIRST + timedelta(30)
    rows = day_rows(rng, new_day, 12, "new") + day_rows(rng, late, 4, "late")
    p.ingest([write_csv(raw / "new.csv", rows)])
    result = p.build()
    after = partitions(str(wh))
    built = set(result.dates)
    assert {late, new_day} <= built and max(built - {new_day}) <= late + timedelta(1)
    reach = {(d + timedelta(k)).isoformat() for d in built for k in (-1, 0, 1)}
    for name in BUILT:
        changed = {
            d
            for d in set(before[name]) | set(after[name])
            if before[name].get(d) != after[name].get(d)
        }
        allowed = reach if name in GOLD_FUNNELS else {d.isoformat() for d in built}
        assert changed <= allowed, (name, sorted(changed - allowed))
        # one commit per table: readers see it before the build or after it
        assert tables.version(tables.table_path(str(wh), name)) == versions[name] + 1, name
    for name in (tables.SILVER, *GOLD_FUNNELS):
        assert {late.isoformat(), new_day.isoformat()} <= {
            d for d in after[name] if before[name].get(d) != after[name][d]
        }, name
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_equals_full_rebuild(wh, scratch)


BASE_DAYS = 20  # longer than a change's reach in detection (history_days + 11), so a detect
# after a change re-scores only a part of the history
STEP = st.one_of(
    st.tuples(st.just("new"), st.integers(0, BASE_DAYS + 1), st.integers(1, 40)),
    st.tuples(st.just("replace"), st.integers(0, BASE_DAYS + 1), st.integers(1, 40)),
    st.tuples(st.just("late"), st.integers(0, BASE_DAYS + 1), st.integers(1, 5)),
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
    p = Pipeline(warehouse=str(wh), **DETECT)
    p.ingest([write_csv(raw / "base.csv", day_rows(rng, FIRST, 10, "base"))])
    history = [r for d in range(BASE_DAYS) for r in history_day(rng, d, 40)]
    p.ingest([write_csv(raw / "history.csv", history)])
    p.build()
    p.detect()
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
        p.detect(full=kind == "full")
        assert_equals_full_rebuild(wh, scratch, DETECT)


DETECT_ENV = {f"FUNNELPULSE_{name.upper()}": str(value) for name, value in DETECT.items()}


def _cli(wh: Path, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """`cli` with the detection settings these tests use."""
    return cli(wh, *args, kill_at=kill_at, env=DETECT_ENV)


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


def _history(raw: Path, days: int, seed: int, per_day: int = 40) -> Path:
    rng = random.Random(seed)
    rows = [r for d in range(days) for r in history_day(rng, d, per_day)]
    return write_csv(raw / "history.csv", rows)


@pytest.fixture(scope="module")
def built_24_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 days of history ingested and built, never detected: each test detects on a copy (the
    build does not depend on the detection settings)."""
    base = tmp_path_factory.mktemp("built24")
    raw = base / "raw"
    raw.mkdir()
    p = Pipeline(warehouse=str(base / "wh"))
    p.ingest([_history(raw, 24, seed=5)])
    p.build()
    return base / "wh"


@pytest.mark.parametrize("session_rates", [False, True])
def test_detect_after_a_day_append_rescores_only_what_the_new_day_reaches(
    tmp_path: Path, built_24_days: Path, session_rates: bool
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    wh = tmp_path / "wh"
    settings = {**DETECT, "session_rates": session_rates}
    shutil.copytree(built_24_days, wh)
    p = Pipeline(warehouse=str(wh), **settings)
    first = p.detect()
    assert first.anomalies.num_rows > 0  # the comparison below is about real rows
    before = {r["anomaly_id"]: r["detected_at"] for r in first.anomalies.to_pylist()}
    rng = random.Random(6)
    new_day = FIRST + timedelta(24)
    # the new day, and a session of the last old day that carts after midnight
    rows = day_rows(rng, new_day, 40, "new") + [
        row("2019-10-25 00:10:00", "cart", 1, "b1", "5.00", 7, "h23-0"),
    ]
    p.ingest([write_csv(raw / "day25.csv", rows)])
    p.build()
    again = p.detect()
    # Rows that start more than the reach before the new day were not scored again: they keep
    # the time they were first detected (the others were re-scored, at a later time).
    reach = DETECT["history_days"] + 11
    old = [
        r for r in again.anomalies.to_pylist() if r["window_date"] < new_day - timedelta(reach + 2)
    ]
    assert old and all(r["detected_at"] == before[r["anomaly_id"]] for r in old)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_equals_full_rebuild(wh, scratch, settings)
    # the result the alerts are sent from is the whole table, as a full detect's
    assert again.anomalies.num_rows == tables.read(tables.table_path(str(wh), "anomalies")).num_rows


def test_detect_with_nothing_changed_scores_nothing_and_keeps_the_incidents(
    tmp_path: Path, built_24_days: Path
) -> None:
    shutil.copytree(built_24_days, tmp_path / "wh")
    p = Pipeline(warehouse=str(tmp_path / "wh"), **DETECT)
    first = p.detect()
    again = p.detect()
    assert first.anomalies.num_rows > 0
    assert detected(str(tmp_path / "wh"), "anomalies", ()) == sorted(
        (
            tuple(
                (k, float(f"{v:.9g}") if isinstance(v, float) else v) for k, v in sorted(r.items())
            )
            for r in first.anomalies.to_pylist()
        ),
        key=repr,
    )  # not re-written: even the detection times are the first run's
    assert [i.incident_id for i in again.incidents] == [i.incident_id for i in first.incidents]
    assert again.as_of == first.as_of
    # a detection table removed by hand is not "nothing changed": everything is scored again
    shutil.rmtree(tmp_path / "wh" / "anomalies")
    assert p.detect().anomalies.num_rows == first.anomalies.num_rows
    assert tables.read(tables.table_path(str(tmp_path / "wh"), "anomalies")).num_rows == (
        first.anomalies.num_rows
    )


@pytest.mark.faults
@pytest.mark.parametrize(
    "point",
    [
        "detect.journal_written",
        "detect.anomalies_committed",
        "detect.incidents_committed",
        "detect.state_written",
    ],
)
def test_incremental_detect_killed_at_each_boundary_then_rerun_equals_full(
    tmp_path: Path, point: str
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    wh = tmp_path / "wh"
    hist = _history(raw, 20, seed=9)
    assert _cli(wh, "ingest", str(hist)).returncode == 0
    assert _cli(wh, "build").returncode == 0
    assert _cli(wh, "detect").returncode == 0
    rng = random.Random(10)
    new = write_csv(
        raw / "new.csv",
        day_rows(rng, FIRST + timedelta(20), 40, "new")
        + day_rows(rng, FIRST + timedelta(15), 5, "late"),
    )
    assert _cli(wh, "ingest", str(new)).returncode == 0
    assert _cli(wh, "build").returncode == 0
    assert _cli(wh, "detect", kill_at=point).returncode == -signal.SIGKILL
    if point in ("detect.anomalies_committed", "detect.incidents_committed"):
        # half written: a reader is told, not shown anomalies that disagree with the incidents
        shown = _cli(wh, "report")
        assert shown.returncode == 1 and "detect was interrupted" in shown.stderr
    again = _cli(wh, "detect")
    assert again.returncode == 0, again.stderr
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_equals_full_rebuild(wh, scratch, DETECT)
    # What the rerun scored is recorded: a later detect finds nothing to write.
    version = tables.version(tables.table_path(str(wh), "anomalies"))
    assert _cli(wh, "detect").returncode == 0
    assert tables.version(tables.table_path(str(wh), "anomalies")) == version


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.usefixtures("shared_spark")
def test_spark_builds_the_changed_set_of_dates_equal_to_a_full_rebuild(tmp_path: Path) -> None:
    """On Spark too, late events far back and a new day rewrite silver and gold for their dates
    only (the session funnels there rebuild the span of entry dates between them)."""
    rng = random.Random(12)
    raw = tmp_path / "raw"
    raw.mkdir()
    wh = tmp_path / "wh"
    p = Pipeline(warehouse=str(wh), spark_master="local[2]")
    history = [r for d in range(14) for r in day_rows(rng, FIRST + timedelta(d), 10, f"h{d}")]
    p.ingest([write_csv(raw / "hist.csv", history)])
    p.build()
    before = partitions(str(wh))
    late, new_day = FIRST + timedelta(3), FIRST + timedelta(14)
    rows = day_rows(rng, new_day, 10, "new") + day_rows(rng, late, 4, "late")
    p.ingest([write_csv(raw / "new.csv", rows)])
    p.build(engine="spark")
    after = partitions(str(wh))
    # the dates of the new events and their neighbours (a late session may cart after midnight)
    built = {(d + timedelta(k)).isoformat() for d in (late, new_day) for k in (-1, 0, 1)}
    for name in (m.name for m in MODELS):
        changed = {
            d
            for d in set(before[name]) | set(after[name])
            if before[name].get(d) != after[name].get(d)
        }
        assert changed <= built, (name, sorted(changed - built))
        if name == tables.SILVER:
            assert {late.isoformat(), new_day.isoformat()} <= changed
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_equals_full_rebuild(wh, scratch)
