"""Live incidents end to end on real tables: batch history, live buckets MERGEd batch by batch,
one opening and one resolution per incident and sink, restarts and kills that neither resend
nor lose a message (exact line counts in the file sink)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from funnelpulse import Pipeline, tables
from funnelpulse.anomaly.live_incidents import check_live, read_incidents
from funnelpulse.anomaly.sinks import idempotency_key
from funnelpulse.config import load_settings
from funnelpulse.generate import Incident, generate_events, write_events
from funnelpulse.streaming.buckets import update_buckets

START = datetime(2024, 3, 1, tzinfo=UTC)
DAY = START + timedelta(days=5)
BREAK = DAY + timedelta(hours=12)  # the whole shop's checkout is broken 12:00-13:00

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("live")
    broken = Incident("L1", "drop", "shop", "all", "purchase", BREAK, 1, 0.0)
    events = generate_events(
        6 * 40_000, seed=21, start=START, days=6, brands=40, incidents=[broken]
    )
    cut = pa.scalar(DAY, pa.timestamp("us", "UTC"))
    hist = write_events(events.filter(pc.less(events["event_time"], cut)), root / "hist.csv")
    day = write_events(events.filter(pc.greater_equal(events["event_time"], cut)), root / "day.csv")
    Pipeline(warehouse=str(root / "wh")).ingest([hist])
    Pipeline(warehouse=str(root / "wh")).build()
    judged = Pipeline(warehouse=str(root / "day_wh"))
    judged.ingest([day])
    judged.build()
    silver = tables.read(tables.table_path(judged.warehouse, tables.SILVER))
    pq.write_table(silver.sort_by("event_time"), root / "day_silver.parquet")
    return root


MINUTES = 5  # these scenarios are written in 5-minute buckets (the setting is 2 by default)


def stream_until(wh: str, silver: pa.Table, until: datetime, since: datetime = DAY) -> None:
    """Feed the day's events in 5-minute batches (batch id = minutes since midnight / 5)."""
    t = since
    while t < until:
        nxt = t + timedelta(minutes=5)
        part = silver.filter(
            pc.and_(
                pc.greater_equal(silver["event_time"], pa.scalar(t, pa.timestamp("us", "UTC"))),
                pc.less(silver["event_time"], pa.scalar(nxt, pa.timestamp("us", "UTC"))),
            )
        )
        update_buckets(
            wh, part, batch_id=int((nxt - DAY) / timedelta(minutes=5)), bucket_minutes=MINUTES
        )
        t = nxt


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def setup_copy(prepared: Path, tmp_path: Path) -> tuple[str, pa.Table, Path]:
    wh = tmp_path / "wh"
    shutil.copytree(prepared / "wh", wh)
    return str(wh), pq.read_table(prepared / "day_silver.parquet"), tmp_path / "alerts.jsonl"


def shop_lines_ids(shop_lines: list[dict[str, object]]) -> list[object]:
    return [x["incident_id"] for x in shop_lines]


def settings_for(wh: str, alert_file: Path):  # type: ignore[no-untyped-def]
    return load_settings(
        warehouse=wh,
        alert_sinks=("file",),
        alert_file=str(alert_file),
        min_severity="low",
        live_bucket_minutes=MINUTES,
    )


def test_opened_once_updated_while_it_lasts_resolved_once(prepared: Path, tmp_path: Path) -> None:
    wh, silver, alert_file = setup_copy(prepared, tmp_path)
    settings = settings_for(wh, alert_file)
    stream_until(wh, silver, BREAK)
    quiet = check_live(wh, settings, BREAK + timedelta(seconds=40))
    assert quiet.incidents == [] and lines(alert_file) == []
    stream_until(wh, silver, BREAK + timedelta(minutes=15), since=BREAK)
    first = check_live(wh, settings, BREAK + timedelta(minutes=15, seconds=40))
    shop = [i for i in first.incidents if i.dimension == "shop"]
    assert len(shop) == 1 and shop[0].status == "open"
    assert shop[0].step in ("cart_to_purchase", "purchases") and shop[0].type == "drop"
    assert shop[0].detected_at <= BREAK + timedelta(minutes=15)
    sent = lines(alert_file)
    opened = [x for x in sent if x["incident_id"] == shop[0].incident_id]
    assert len(opened) == 1
    assert opened[0]["idempotency_key"] == idempotency_key(shop[0].incident_id)
    assert "so far" in str(opened[0]["message"]) and "purchases" in str(opened[0]["message"])
    # while it lasts: updated in live_incidents, never re-sent
    stream_until(wh, silver, BREAK + timedelta(minutes=40), since=BREAK + timedelta(minutes=15))
    later = check_live(wh, settings, BREAK + timedelta(minutes=40, seconds=40))
    again = next(i for i in later.incidents if i.incident_id == shop[0].incident_id)
    assert again.status == "open" and again.minutes > shop[0].minutes
    assert again.lost_purchases > shop[0].lost_purchases > 0
    ids = [x["incident_id"] for x in lines(alert_file)]
    assert ids.count(shop[0].incident_id) == 1 and ids[: len(sent)] == [
        x["incident_id"] for x in sent
    ]
    row = next(r for r in read_incidents(wh).to_pylist() if r["incident_id"] == shop[0].incident_id)
    assert row["status"] == "open" and row["lost_purchases"] == pytest.approx(again.lost_purchases)
    # fixed at 13:00: closed with one "resolved" message, then nothing more
    stream_until(wh, silver, BREAK + timedelta(hours=2), since=BREAK + timedelta(minutes=40))
    check_live(wh, settings, BREAK + timedelta(hours=2, seconds=40))
    check_live(wh, settings, BREAK + timedelta(hours=2, seconds=40))
    shop_lines = [x for x in lines(alert_file) if str(x["incident_id"]).startswith("shop:")]
    assert [x["incident_id"] for x in shop_lines] == [
        shop[0].incident_id,
        shop[0].incident_id + ":resolved",
    ]
    assert "back to normal" in str(shop_lines[1]["message"])
    # one real event, one notification: the shop, its price bands and brands that the break
    # moved are one incident (before: an opening and a resolution for each of 7 segments)
    every = [x["incident_id"] for x in lines(alert_file)]
    assert every == shop_lines_ids(shop_lines), every
    segments = shop_lines[0]["segments"]
    assert segments[0] == "shop:all" and all(":" in s for s in segments)
    alerts = tables.read(tables.table_path(wh, tables.ALERTS)).to_pylist()
    assert sorted(r["status"] for r in alerts if str(r["incident_id"]).startswith("shop:")) == [
        "sent",
        "sent",
    ]


@pytest.mark.parametrize(("every_s", "checks"), [(0.0, 3), (3600.0, 1)])
def test_the_stream_hook_checks_each_new_bucket_unless_throttled(
    prepared: Path, tmp_path: Path, every_s: float, checks: int
) -> None:
    from funnelpulse.streaming.live_hook import OpenWindowHook

    wh, silver, alert_file = setup_copy(prepared, tmp_path)
    settings = load_settings(
        warehouse=wh,
        alert_sinks=("file",),
        alert_file=str(alert_file),
        min_severity="low",
        live_check_every_s=every_s,
        live_bucket_minutes=MINUTES,
    )
    hook = OpenWindowHook(wh, settings, ["file"])
    stream_until(wh, silver, BREAK + timedelta(minutes=15))
    for minutes in (5, 10, 10, 15):  # three new buckets (one repeated): a fast replay's pace
        hook.after_commit(BREAK + timedelta(minutes=minutes, seconds=40))
    assert hook.checks == checks
    # the newest bucket scored: 12:10-12:15 when every bucket is checked, else 12:00-12:05
    assert hook._last_bucket == BREAK + timedelta(minutes=10 if every_s == 0 else 0)
    if every_s == 0:  # the break is alerted by 12:15, once
        opened = [x for x in lines(alert_file) if str(x["incident_id"]).startswith("shop:all/")]
        assert len(opened) == 1


CHECK = """
import sys
from datetime import datetime
from funnelpulse.anomaly.live_incidents import check_live
from funnelpulse.config import load_settings
s = load_settings(warehouse=sys.argv[1], alert_sinks=("file",), alert_file=sys.argv[2],
                  min_severity="low", live_bucket_minutes=5)
check_live(sys.argv[1], s, datetime.fromisoformat(sys.argv[3]))
"""


@pytest.mark.faults
@pytest.mark.parametrize(
    ("kill_at", "lines_after_kill"),
    [("alerts.live_before_send", 0), ("alerts.live_recorded", 1)],
)
def test_killed_while_alerting_then_restarted_sends_each_message_once(
    prepared: Path, tmp_path: Path, kill_at: str, lines_after_kill: int
) -> None:
    wh, silver, alert_file = setup_copy(prepared, tmp_path)
    stream_until(wh, silver, BREAK + timedelta(minutes=15))
    at = (BREAK + timedelta(minutes=15, seconds=40)).isoformat()

    def run(env: dict[str, str]) -> int:
        return subprocess.run(
            [sys.executable, "-c", CHECK, wh, str(alert_file), at],
            env={**os.environ, **env},
            capture_output=True,
        ).returncode

    assert run({"FUNNELPULSE_KILL_AT": kill_at}) == -9
    assert len(lines(alert_file)) == lines_after_kill
    assert run({}) == 0
    assert run({}) == 0
    got = [x["incident_id"] for x in lines(alert_file)]
    assert len(got) == len(set(got)) >= 1  # every opening exactly once
    assert any(str(i).startswith("shop:all/") for i in got)


def test_live_page_shows_the_open_incident_and_its_band(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FUNNELPULSE_LIVE_BUCKET_MINUTES", str(MINUTES))  # the page's settings

    wh, silver, alert_file = setup_copy(prepared, tmp_path)
    stream_until(wh, silver, BREAK + timedelta(minutes=30))
    check_live(wh, settings_for(wh, alert_file), BREAK + timedelta(minutes=30, seconds=40))
    page = Path(__file__).parents[1] / "src" / "funnelpulse" / "dashboard" / "pages" / "5_Live.py"
    old = os.environ.get("FUNNELPULSE_WAREHOUSE")
    os.environ["FUNNELPULSE_WAREHOUSE"] = wh
    try:
        at = AppTest.from_file(str(page), default_timeout=120).run()
    finally:
        if old is None:
            os.environ.pop("FUNNELPULSE_WAREHOUSE", None)
        else:
            os.environ["FUNNELPULSE_WAREHOUSE"] = old
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Open incidents"]) >= 1
    assert float(metrics["Purchases lost so far"].replace(",", "")) > 0
    table = at.dataframe[-1].value
    assert "Whole shop" in set(table["Segment"])  # shop:all in the page's words
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    names = {t.get("name") for c in charts for t in c["data"]}
    assert {"observed", "expected", "expected band (~95%)"} <= names


@pytest.mark.browser
def test_live_page_updates_the_running_loss_without_reloading(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    # the dashboard reads the same settings as the stream that wrote the buckets
    monkeypatch.setenv("FUNNELPULSE_LIVE_BUCKET_MINUTES", str(MINUTES))
    from browser_tools import browser, running_dashboard

    wh, silver, alert_file = setup_copy(prepared, tmp_path)
    settings = settings_for(wh, alert_file)
    stream_until(wh, silver, BREAK + timedelta(minutes=20))
    check_live(wh, settings, BREAK + timedelta(minutes=20, seconds=40))
    with running_dashboard(wh) as url, browser() as b:
        page = b.new_page()
        page.goto(f"{url}/Live", wait_until="domcontentloaded")
        page.get_by_role("heading", name=f"Live incidents ({MINUTES}-minute buckets)").wait_for(
            timeout=60_000
        )
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        lost = page.locator('[data-testid="stMetric"]').filter(has_text="Purchases lost so far")
        before = lost.locator('[data-testid="stMetricValue"]').inner_text()
        assert float(before.replace(",", "")) > 0
        page.evaluate("window.__not_reloaded = true")
        # the stream goes on: 20 more minutes of the broken checkout, checked again
        stream_until(wh, silver, BREAK + timedelta(minutes=40), since=BREAK + timedelta(minutes=20))
        check_live(wh, settings, BREAK + timedelta(minutes=40, seconds=40))
        page.wait_for_function(
            """(before) => [...document.querySelectorAll('[data-testid="stMetric"]')]
                .some(m => m.innerText.includes('Purchases lost so far')
                    && !m.innerText.includes(before))""",
            arg=before,
            timeout=60_000,
        )
        assert page.evaluate("window.__not_reloaded === true")  # the fragment refreshed alone
        after = lost.locator('[data-testid="stMetricValue"]').inner_text()
        assert float(after.replace(",", "")) > float(before.replace(",", ""))


def test_pagerduty_gets_trigger_then_resolve_with_one_dedup_key_for_a_live_break(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receivers import receiver

    wh, silver, _ = setup_copy(prepared, tmp_path)
    monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_ROUTING_KEY", "live-routing-key-0001")
    with receiver() as pd:
        settings = load_settings(
            warehouse=wh,
            alert_sinks=("pagerduty",),
            pagerduty_url=pd.url + "/v2/enqueue",
            min_severity="low",
            live_bucket_minutes=MINUTES,
        )
        stream_until(wh, silver, BREAK + timedelta(minutes=15))
        first = check_live(wh, settings, BREAK + timedelta(minutes=15, seconds=40))
        shop = next(i for i in first.incidents if i.dimension == "shop")
        stream_until(wh, silver, BREAK + timedelta(hours=2), since=BREAK + timedelta(minutes=15))
        check_live(wh, settings, BREAK + timedelta(hours=2, seconds=40))
        check_live(wh, settings, BREAK + timedelta(hours=2, seconds=40))
    key = idempotency_key(shop.incident_id)
    events = [(e["event_action"], e["dedup_key"]) for e in pd.bodies()]
    assert [a for a, k in events if k == key] == ["trigger", "resolve"]
    assert len(events) == len(set(events))  # nothing sent twice


def test_a_muted_live_incident_is_recorded_and_sent_once_when_unmuted(
    prepared: Path, tmp_path: Path
) -> None:
    from funnelpulse.anomaly.incident_book import mute, unmute

    wh, silver, alert_file = setup_copy(prepared, tmp_path)
    settings = settings_for(wh, alert_file)
    mute(wh, "shop:all", None, timedelta(hours=1), "load test", "ana")
    stream_until(wh, silver, BREAK + timedelta(minutes=15))
    first = check_live(wh, settings, BREAK + timedelta(minutes=15, seconds=40))
    shop = next(i for i in first.incidents if i.dimension == "shop")
    assert first.delivery is not None and first.delivery.muted == 1
    assert [x for x in lines(alert_file) if x["incident_id"] == shop.incident_id] == []
    check_live(wh, settings, BREAK + timedelta(minutes=15, seconds=40))
    assert unmute(wh, "shop:all", None) == 1
    stream_until(wh, silver, BREAK + timedelta(minutes=25), since=BREAK + timedelta(minutes=15))
    check_live(wh, settings, BREAK + timedelta(minutes=25, seconds=40))
    check_live(wh, settings, BREAK + timedelta(minutes=25, seconds=40))
    sent = [x for x in lines(alert_file) if x["incident_id"] == shop.incident_id]
    assert len(sent) == 1
    alerts = tables.read(tables.table_path(wh, tables.ALERTS)).to_pylist()
    statuses = sorted(
        r["status"] for r in alerts if r["incident_id"] == shop.incident_id and r["sink"] == "file"
    )
    assert statuses == ["muted", "sent"]


def _incidents_cli(wh: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "funnelpulse", "--warehouse", wh, "incidents", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.browser
def test_live_page_mutes_and_acknowledges_through_the_cli_path(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clicking Mute, then Acknowledge on the Live page in chromium records exactly what
    `funnelpulse incidents mute` / `ack` record (by the dashboard), and the ack tells the sink
    that got the opening, once."""
    sys.path.insert(0, str(Path(__file__).parent))
    from browser_tools import browser, running_dashboard

    from funnelpulse.anomaly.incident_book import incident_book
    from funnelpulse.anomaly.sink_base import notice_id
    from funnelpulse.anomaly.workflow import active_mutes, read_actions

    wh, silver, alert_file = setup_copy(prepared, tmp_path)
    settings = settings_for(wh, alert_file)
    # the dashboard reads the same settings as the stream (its buckets, its file sink)
    monkeypatch.setenv("FUNNELPULSE_LIVE_BUCKET_MINUTES", str(MINUTES))
    monkeypatch.setenv("FUNNELPULSE_ALERT_FILE", str(alert_file))
    monkeypatch.setenv("FUNNELPULSE_ALERT_SINKS", "file")
    stream_until(wh, silver, BREAK + timedelta(minutes=30))
    check_live(wh, settings, BREAK + timedelta(minutes=30, seconds=40))
    # the row the page selects first, and the incident it belongs to
    first = read_incidents(wh).to_pylist()[0]["incident_id"]
    book = [v for v in incident_book(wh, settings) if v.source == "live"]
    view = next(v for v in book if first == v.incident_id or first in v.incident.anomaly_ids)
    iid = view.incident_id
    assert view.state == "open"
    opened = [x for x in lines(alert_file) if x["incident_id"] == iid]
    assert len(opened) == 1  # the stream's check sent the opening to the file sink
    before = len(lines(alert_file))
    mute_label = "Mute Whole shop for 4 hours" if view.incident.root == "shop:all" else "Mute "
    with running_dashboard(wh) as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(f"{url}/Live", wait_until="domcontentloaded")
        button = page.get_by_role("button", name=mute_label)
        button.first.wait_for(timeout=90_000)
        button.first.click()
        page.get_by_text("Muted for 4 hours").first.wait_for(timeout=60_000)
        shown = _incidents_cli(wh, "show", iid)
        assert "  state:    muted (muted " in shown and "by dashboard)" in shown, shown
        mutes = active_mutes(read_actions(wh), datetime.now(UTC))
        assert [(m.segment, m.by) for m in mutes] == [(view.incident.root, "dashboard")]
        assert len(lines(alert_file)) == before  # a mute sends nothing

        page.get_by_role("button", name="Acknowledge").first.click()
        page.get_by_text("Acknowledged; 1 notification(s) sent.").first.wait_for(timeout=60_000)
        shown = _incidents_cli(wh, "show", iid)
        assert "  state:    acknowledged (by dashboard at " in shown, shown
        assert "  acknowledged by dashboard at " in shown, shown
        # the page shows the new state, and Acknowledge is no longer offered
        page.get_by_role("button", name="Acknowledge").first.wait_for(timeout=30_000)
        assert page.get_by_role("button", name="Acknowledge").first.is_disabled()
        cells = page.locator('[data-testid="stDataFrame"] [role="gridcell"]').all_text_contents()
        assert "acknowledged" in cells, cells
    after = lines(alert_file)
    acks = [x for x in after if x["incident_id"] == notice_id(iid, "acknowledged")]
    assert len(acks) == 1 and len(after) == before + 1
    listed = json.loads(_incidents_cli(wh, "list", "--format", "json"))
    assert [x["state"] for x in listed if x["id"] == iid] == ["acknowledged"]
