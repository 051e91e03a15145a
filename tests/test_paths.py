"""Paths are data, not SQL: every command works on a warehouse whose folder name has a space,
quotes, unicode or `?`, and no file lands in a percent-encoded twin folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_faults import cli, make_csv, no_jargon, ok, pending, rows

from funnelpulse import tables
from funnelpulse.dashboard.data import DashboardData, Filter

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("name", ["wh 'q\"ü x", "wh?q"])
def test_every_command_works_on_a_warehouse_with_quotes_spaces_unicode_and_question_marks(
    tmp_path: Path, name: str
) -> None:
    raw = make_csv(tmp_path / "raw.csv", 3_000, "2019-10-01", 2, seed=4)
    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(raw, landing / "events.csv")
    wh = tmp_path / name

    ok(cli(wh, "ingest", str(raw)))
    assert "silver_events: 3,000 rows" in ok(cli(wh, "build"))
    assert "3,000" in ok(cli(wh, "report"))
    assert "sessions" in ok(cli(wh, "funnel"))
    ok(cli(wh, "detect"))

    stream = ["stream", "--source", f"files://{landing}", "--until-idle", "1"]
    if "?" in name:  # the stream's state file cannot live under a `?`: refused, with the way out
        refused = cli(wh, *stream)
        assert refused.returncode == 1, refused.stderr
        assert "Give --checkpoint a folder without '?'" in refused.stderr
        no_jargon(refused.stderr)
        stream += ["--checkpoint", str(tmp_path / "checkpoint")]
    assert "3,007 events in, 0 late events quarantined (behind the watermark), 7 quarantined" in ok(
        cli(wh, *stream, timeout=180)
    )
    live = tables.read(tables.table_path(str(wh), tables.GOLD_STREAM))
    batch = tables.read(tables.table_path(str(wh), tables.SILVER))
    views = batch.column("event_type").to_pylist().count("view")
    assert sum(live.column("views").to_pylist()) == views

    data = DashboardData(str(wh))
    bounds = data.date_bounds()
    assert bounds is not None
    assert data.funnel(Filter(*bounds))["views"] == views

    # Nothing was written beside the warehouse under an encoded name (`wh%20...`).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [name, "raw.csv", "landing", *(["checkpoint"] if "?" in name else [])]
    )
    assert rows(wh, tables.BRONZE) == 3_000


def test_a_percent_sign_in_the_warehouse_path_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    raw = make_csv(tmp_path / "raw.csv", 500, "2019-10-01", 1, seed=4)
    wh = tmp_path / "wh%41{x}"
    refused = cli(wh, "ingest", str(raw))
    assert refused.returncode == 1, refused.stderr
    assert "Give a --warehouse folder whose path has no '%'" in refused.stderr
    no_jargon(refused.stderr)
    assert pending(wh) == []  # no half-done ingest left for the next command
    assert not (tmp_path / "whA{x}").exists()
    ok(cli(tmp_path / "wh", "ingest", str(raw)))  # the advice: another folder works
