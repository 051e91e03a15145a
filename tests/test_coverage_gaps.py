"""No data is not a traffic drop, and known events are not incidents: end to end on generated
data in real tables (batch detect, report, the stream's final-hours path, annotations)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from funnelpulse import Pipeline, load_settings, tables
from funnelpulse.anomaly import incident_store
from funnelpulse.anomaly.live import alert_live
from funnelpulse.cli import run
from funnelpulse.contract import STREAM_SCHEMA
from funnelpulse.generate import Incident, generate_events, write_events

pytestmark = pytest.mark.slow

START = datetime(2024, 3, 1, tzinfo=UTC)
OUTAGE = START + timedelta(days=4, hours=9)  # tracking outage 09:00-12:00 on day 5
GAP = (START + timedelta(days=5), START + timedelta(days=6, hours=12))  # never received
UTC_US = pa.timestamp("us", "UTC")


def between(events: pa.Table, lo: datetime, hi: datetime) -> pa.Table:
    t = events["event_time"]
    return events.filter(
        pc.and_(pc.greater_equal(t, pa.scalar(lo, UTC_US)), pc.less(t, pa.scalar(hi, UTC_US)))
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gaps")
    outage = Incident("O1", "outage", "shop", "all", "views", OUTAGE, 3, 0.1)
    events = generate_events(7 * 40_000, seed=5, start=START, days=7, brands=40, incidents=[outage])
    end = START + timedelta(days=7)
    write_events(between(events, START, GAP[0]), root / "before.csv")
    write_events(between(events, GAP[1], end), root / "after.csv")
    # a batch warehouse with a hole: the files of day 6 and of day 7's morning never came
    batch = Pipeline(warehouse=str(root / "wh"))
    batch.ingest([root / "before.csv", root / "after.csv"])
    batch.build()
    # the stream's warehouse: history up to the gap, then the stream started at 12:00 on day 7
    live = Pipeline(warehouse=str(root / "live_wh"))
    live.ingest([root / "before.csv"])
    live.build()
    later = Pipeline(warehouse=str(root / "later_wh"))
    later.ingest([root / "after.csv"])
    later.build()
    hourly = tables.read(tables.table_path(later.warehouse, tables.GOLD_HOURLY_BRAND))
    now = datetime.now(UTC)
    stream_rows = [
        {**r, "is_final": True, "last_event_at": r["window_end"], "updated_at": now}
        for r in hourly.to_pylist()
    ]
    tables.write(
        tables.table_path(live.warehouse, tables.GOLD_STREAM),
        pa.Table.from_pylist(stream_rows, schema=STREAM_SCHEMA),
        partition_by=["window_date"],
    )
    return root


def test_a_gap_in_the_files_is_a_coverage_gap_not_an_outage(made: Path) -> None:
    p = Pipeline(warehouse=str(made / "wh"))
    result = p.detect()
    assert result.gaps == [GAP]
    rows = result.anomalies.to_pylist()
    inside = [r for r in rows if r["window_start"] < GAP[1] and r["window_end"] > GAP[0]]
    assert inside == []  # no window holding a gap hour fires
    # the real outage is still found: one incident, rooted at the shop, 09:00-12:00
    shop = [i for i in result.incidents if i.start < OUTAGE + timedelta(hours=3) and i.end > OUTAGE]
    assert len(shop) == 1 and shop[0].root == "shop:all" and shop[0].kind == "drop"
    assert (shop[0].start, shop[0].end) == (OUTAGE, OUTAGE + timedelta(hours=3))
    stored = incident_store.read(p.warehouse)
    assert all(not (r["started_at"] < GAP[1] and r["ended_at"] > GAP[0]) for r in stored)
    report = p.report()
    assert [(g["start"], g["end"], g["hours"]) for g in report["coverage_gaps"]] == [
        (GAP[0], GAP[1], 36)
    ]


def test_the_stream_started_after_a_gap_raises_no_traffic_drop(made: Path, tmp_path: Path) -> None:
    import shutil

    wh = tmp_path / "live_wh"
    shutil.copytree(made / "live_wh", wh)
    alert_file = tmp_path / "alerts.jsonl"
    settings = load_settings(
        warehouse=str(wh), alert_file=str(alert_file), alert_sinks=("file",), min_severity="low"
    )
    found = alert_live(str(wh), settings, sinks=["file"])
    sent = (
        [json.loads(x) for x in alert_file.read_text().splitlines()] if alert_file.exists() else []
    )
    drops = [x for x in sent if "traffic_drop" in x["types"]]
    assert drops == [], drops
    assert all(x["start"] >= GAP[1].isoformat() for x in sent)
    stored = incident_store.read(str(wh))
    assert len(stored) == found.incidents and "traffic-drop" not in str(stored)


def test_an_annotation_keeps_a_known_event_from_being_an_incident(
    made: Path, tmp_path: Path
) -> None:
    import shutil

    wh = tmp_path / "wh"
    shutil.copytree(made / "wh", wh)
    base = ["--warehouse", str(wh)]
    assert run([*base, "detect"]) == 0
    hit = [
        r
        for r in incident_store.read(str(wh))
        if r["started_at"] < OUTAGE + timedelta(hours=3) and r["ended_at"] > OUTAGE
    ]
    assert len(hit) == 1
    start, end = OUTAGE.strftime("%Y-%m-%dT%H:%M"), (OUTAGE + timedelta(hours=3)).isoformat()
    assert run([*base, "annotate", "--start", start, "--end", end, "planned tracking work"]) == 0
    assert run([*base, "detect"]) == 0
    after = [
        r
        for r in incident_store.read(str(wh))
        if r["started_at"] < OUTAGE + timedelta(hours=3) and r["ended_at"] > OUTAGE
    ]
    assert after == []
    anomalies = tables.read(tables.table_path(str(wh), tables.ANOMALIES)).to_pylist()
    over = OUTAGE + timedelta(hours=3)
    assert not [r for r in anomalies if r["window_start"] < over and r["window_end"] > OUTAGE]
    # deleting it brings the incident back, under the id it had
    from funnelpulse.anomaly import annotations

    (note,) = annotations.read(str(wh))
    assert run([*base, "annotate", "--delete", note["annotation_id"]]) == 0
    assert run([*base, "detect"]) == 0
    again = [
        r
        for r in incident_store.read(str(wh))
        if r["started_at"] < OUTAGE + timedelta(hours=3) and r["ended_at"] > OUTAGE
    ]
    assert [r["root"] for r in again] == ["shop:all"]
