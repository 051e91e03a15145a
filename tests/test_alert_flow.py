"""The incident workflow against real receivers on 127.0.0.1: PagerDuty (trigger, acknowledge,
resolve under one dedup_key), Alertmanager (the alert, then its endsAt), mutes and maintenance
windows, routes, a receiver that is down, and the `funnelpulse incidents` commands."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner
from receivers import receiver

from funnelpulse import tables
from funnelpulse.anomaly.alerts import send_alerts
from funnelpulse.anomaly.sink_base import Sink
from funnelpulse.anomaly.sink_registry import REGISTRY
from funnelpulse.anomaly.sinks import idempotency_key
from funnelpulse.anomaly.workflow import record_action
from funnelpulse.cli import cli
from funnelpulse.config import RULES, SINK_SECRETS, SINKS, load_settings
from funnelpulse.contract import ANOMALY_SCHEMA

ROUTING_KEY = "R0UTINGKEY0000000000000000000042"
DAY = datetime(2019, 10, 10, tzinfo=UTC)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
FAST = (0.01, 0.01)


def anomaly(
    hour: int, segment: str = "acme", z: float = -7.0, step: str = "conversion", dim: str = "brand"
) -> dict[str, Any]:
    start = DAY + timedelta(hours=hour)
    severity = "critical" if abs(z) >= 8 else "high" if abs(z) >= 6 else "medium"
    return {
        "anomaly_id": f"{dim}-{segment}-{step}-{hour}",
        "window_start": start,
        "window_end": start + timedelta(hours=1),
        "dimension": dim,
        "segment": segment,
        "step": step,
        "type": "drop" if z < 0 else "spike",
        "observed_rate": 0.05,
        "expected_rate": 0.25,
        "z": z,
        "severity": severity if z < 0 or abs(z) >= 6 else "low",
        "lost_purchases": 12.0,
        "lost_revenue": 60.0,
        "root_cause": None,
    }


def write_config(tmp_path: Path, text: str, **values: str) -> Path:
    path = tmp_path / "funnelpulse.toml"
    head = "".join(f'{k} = "{v}"\n' for k, v in values.items())
    path.write_text("[funnelpulse]\n" + head + text)
    return path


def rows_of(warehouse: str) -> list[dict[str, Any]]:
    return tables.read(tables.table_path(warehouse, tables.ALERTS)).to_pylist()


def test_every_sink_is_one_registered_class_that_declares_its_needs() -> None:
    assert tuple(REGISTRY) == SINKS
    for name, cls in REGISTRY.items():
        assert issubclass(cls, Sink) and cls.name == name
        # the secrets a run checks before any work are those the sink declares
        assert set(cls.secrets) == ({SINK_SECRETS[name]} if name in SINK_SECRETS else set())
        assert set(cls.settings) <= set(RULES), cls.settings


def test_pagerduty_gets_trigger_then_resolve_with_one_dedup_key_for_a_batch_incident(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    rows = [anomaly(3), anomaly(4, z=-8.5)]
    with receiver() as pd:
        settings = load_settings(
            warehouse=str(tmp_path / "wh"), pagerduty_url=pd.url + "/v2/enqueue"
        )
        # the data ends one hour after the incident: still open
        first = send_alerts(
            settings.warehouse, settings, rows, sinks=["pagerduty"], as_of=DAY + timedelta(hours=6)
        )
        assert (first.sent, first.failed) == (1, 0)
        # three hours of normal data later: resolved
        later = DAY + timedelta(hours=8)
        second = send_alerts(settings.warehouse, settings, rows, sinks=["pagerduty"], as_of=later)
        assert (second.sent, second.skipped, second.updates) == (1, 1, 1)
        third = send_alerts(settings.warehouse, settings, rows, sinks=["pagerduty"], as_of=later)
        assert (third.sent, third.skipped) == (0, 2)
    events = pd.bodies("/v2/enqueue")
    assert [e["event_action"] for e in events] == ["trigger", "resolve"]
    key = idempotency_key("brand:acme/conversion-drop/20191010T03")
    assert {e["dedup_key"] for e in events} == {key}
    assert {e["routing_key"] for e in events} == {ROUTING_KEY}
    trigger = events[0]["payload"]
    assert trigger["severity"] == "critical" and trigger["source"] == "funnelpulse"
    assert trigger["component"] == "brand:acme"
    assert trigger["summary"].startswith("[CRITICAL] conversion drop - brand acme")
    # the routing key (a secret) is never recorded
    assert ROUTING_KEY not in json.dumps([str(r) for r in rows_of(settings.warehouse)])


def test_alertmanager_gets_the_alert_then_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [anomaly(3, segment="globex", step="cart_to_purchase")]
    with receiver() as am:
        settings = load_settings(warehouse=str(tmp_path / "wh"), alertmanager_url=am.url)
        send_alerts(settings.warehouse, settings, rows, sinks=["alertmanager"])
        send_alerts(
            settings.warehouse,
            settings,
            rows,
            sinks=["alertmanager"],
            as_of=DAY + timedelta(hours=10),
        )
    assert [r["path"] for r in am.log] == ["/api/v2/alerts"] * 2
    (firing,), (ended,) = am.bodies()
    assert firing["labels"] == ended["labels"]  # the same alert to Alertmanager
    assert firing["labels"] | {"incident_key": ""} == {
        "alertname": "FunnelPulseIncident",
        "severity": "high",
        "dimension": "brand",
        "segment": "brand:globex",
        "step": "cart_to_purchase",
        "direction": "drops",
        "incident_key": "",
    }
    assert firing["startsAt"] == ended["startsAt"] == "2019-10-10T03:00:00.000000Z"
    assert datetime.fromisoformat(firing["endsAt"]) > datetime.now(UTC) + timedelta(hours=23)
    assert ended["endsAt"] == "2019-10-10T04:00:00.000000Z"
    assert ended["annotations"]["summary"].startswith("[RESOLVED] brand globex incident")
    assert firing["generatorURL"].startswith("http://localhost:8501/Anomalies?incident=brand%3A")


def test_a_muted_segment_is_recorded_not_sent_and_sent_once_after_the_mute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", "http://127.0.0.1:9/unused")
    rows = [anomaly(3), anomaly(3, segment="globex")]
    with receiver() as hook:
        monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", hook.url + "/hook")
        settings = load_settings(warehouse=str(tmp_path / "wh"))
        wh = settings.warehouse
        record_action(
            wh, action="mute", segment="brand:acme", until=NOW + timedelta(hours=2), by="ana"
        )
        muted = send_alerts(wh, settings, rows, sinks=["webhook"], now=NOW)
        assert (muted.sent, muted.muted) == (1, 1)
        assert [b["segment"] for b in hook.bodies()] == ["globex"]
        still = send_alerts(wh, settings, rows, sinks=["webhook"], now=NOW + timedelta(hours=1))
        assert (still.sent, still.muted) == (0, 1)
        after = send_alerts(wh, settings, rows, sinks=["webhook"], now=NOW + timedelta(hours=3))
        assert (after.sent, after.muted) == (1, 0)
        again = send_alerts(wh, settings, rows, sinks=["webhook"], now=NOW + timedelta(hours=4))
        assert again.sent == 0
    assert Counter(b["segment"] for b in hook.bodies()) == {"globex": 1, "acme": 1}
    statuses = Counter((r["segment"], r["status"]) for r in rows_of(wh))
    assert statuses == {("acme", "muted"): 1, ("acme", "sent"): 1, ("globex", "sent"): 1}
    muted_row = next(r for r in rows_of(wh) if r["status"] == "muted")
    assert muted_row["error"] == "muted brand:acme until 2026-12-07 14:00 UTC by ana"


def test_an_incident_over_before_its_mute_ends_is_never_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with receiver() as hook:
        monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", hook.url + "/hook")
        settings = load_settings(warehouse=str(tmp_path / "wh"))
        wh = settings.warehouse
        record_action(wh, action="mute", segment="brand:acme", until=NOW + timedelta(hours=1))
        rows = [anomaly(3)]
        send_alerts(wh, settings, rows, sinks=["webhook"], now=NOW)
        late = DAY + timedelta(hours=12)
        done = send_alerts(
            wh, settings, rows, sinks=["webhook"], now=NOW + timedelta(hours=2), as_of=late
        )
        assert (done.sent, done.muted) == (0, 0)
    assert hook.log == []


def test_a_maintenance_window_holds_back_what_it_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path,
        """
[[silences]]
start = "2026-12-07T11:00:00Z"
end = "2026-12-07T13:00:00Z"
segment = "brand:acme"
note = "checkout upgrade"

[[silences]]
from = "22:00"
to = "02:00"
days = ["mon"]
step = "traffic"
""",
        warehouse=str(tmp_path / "wh"),
    )
    rows = [anomaly(3), anomaly(5, segment="globex", step="traffic")]
    with receiver() as hook:
        monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", hook.url + "/hook")
        settings = load_settings(config)
        wh = settings.warehouse
        held = send_alerts(wh, settings, rows, sinks=["webhook"], now=NOW)
        assert (held.sent, held.muted) == (1, 1)  # acme held; globex traffic at noon sent
        assert hook.bodies()[0]["segment"] == "globex"
        after = send_alerts(wh, settings, rows, sinks=["webhook"], now=NOW + timedelta(hours=2))
        assert (after.sent, after.muted) == (1, 0)
    muted = next(r for r in rows_of(wh) if r["status"] == "muted")
    assert muted["error"] == "maintenance window 1 (checkout upgrade)"
    nightly = settings.silences[1]
    assert nightly.active(datetime(2026, 12, 7, 23, 30, tzinfo=UTC))  # Monday night
    assert nightly.active(datetime(2026, 12, 8, 1, 30, tzinfo=UTC))  # its after-midnight part
    assert not nightly.active(datetime(2026, 12, 8, 23, 30, tzinfo=UTC))  # Tuesday


@pytest.mark.parametrize("hold", ["mute", "window"])
def test_a_brand_mute_holds_the_incident_about_the_brand_not_a_shop_incident_it_is_part_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: str
) -> None:
    """Mutes and windows match an incident's root segment. Muting brand:acme holds the incident
    about acme (root brand:acme, a price band grouped under it) and not the shop-wide incident
    that lists acme among the segments it moved, nor another brand's."""
    from funnelpulse.anomaly.incident_book import incident_book

    config = write_config(
        tmp_path,
        '[[silences]]\nstart = "2026-12-07T11:00:00Z"\nend = "2026-12-07T13:00:00Z"\n'
        'segment = "brand:acme"\n'
        if hold == "window"
        else "",
        warehouse=str(tmp_path / "wh"),
    )
    rows = [
        anomaly(3),  # acme's own incident, the cheap price band it drags along grouped under it
        anomaly(3, segment="10-30", dim="price_band", z=-6.5),
        anomaly(9, segment="all", dim="shop", z=-9.0),  # the whole shop, acme one of its segments
        anomaly(9),
        anomaly(9, segment="globex"),
        anomaly(15, segment="globex"),  # another brand's own incident
    ]
    with receiver() as hook:
        monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", hook.url + "/hook")
        settings = load_settings(config)
        wh = settings.warehouse
        if hold == "mute":
            record_action(
                wh, action="mute", segment="brand:acme", until=NOW + timedelta(hours=2), by="ana"
            )
        first = send_alerts(wh, settings, rows, sinks=["webhook"], now=NOW)
        assert (first.sent, first.muted) == (2, 1)
        # what the receiver got: the shop's incident and globex's, once each; nothing about acme's
        assert sorted(b["incident_id"] for b in hook.bodies()) == [
            "brand:globex/conversion-drop/20191010T15",
            "shop:all/conversion-drop/20191010T09",
        ]
        shop = next(b for b in hook.bodies() if b["segment"] == "all")
        assert "brand:acme" in shop["segments"]
        # the held one is recorded, as muted, under its root
        held = [r for r in rows_of(wh) if r["status"] == "muted"]
        assert [(r["incident_id"], r["segment"]) for r in held] == [
            ("brand:acme/conversion-drop/20191010T03", "acme")
        ]
        # listed as muted at that time (what `incidents list` shows while the hold lasts)
        states = {v.incident_id: v.state for v in incident_book(wh, settings, now=NOW)}
        assert states["brand:acme/conversion-drop/20191010T03"] == "muted"
        assert states["shop:all/conversion-drop/20191010T09"] != "muted"
        # once the hold ends (acme's incident still open), it is sent, once
        after = send_alerts(wh, settings, rows, sinks=["webhook"], now=NOW + timedelta(hours=3))
        assert (after.sent, after.muted) == (1, 0)
    assert Counter(b["incident_id"] for b in hook.bodies()) == {
        "brand:acme/conversion-drop/20191010T03": 1,
        "shop:all/conversion-drop/20191010T09": 1,
        "brand:globex/conversion-drop/20191010T15": 1,
    }


def test_a_mute_with_a_step_holds_only_that_steps_incidents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`incidents mute --segment brand:acme --step traffic`: acme's traffic incident is held,
    its conversion incident is sent; `unmute` then sends the held one, once."""
    rows = [anomaly(3), anomaly(9, step="traffic")]
    warehouse = str(tmp_path / "wh")
    runner = CliRunner()
    with receiver() as hook:
        monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", hook.url + "/hook")
        muted = runner.invoke(
            cli,
            ["--warehouse", warehouse, "incidents", "mute", "--segment", "brand:acme"]
            + ["--step", "traffic", "--for", "2h", "--by", "ana"],
        )
        assert muted.exit_code == 0, muted.output
        assert muted.output.startswith("Muted brand:acme traffic until "), muted.output
        settings = load_settings(warehouse=warehouse)
        first = send_alerts(warehouse, settings, rows, sinks=["webhook"])
        assert (first.sent, first.muted) == (1, 1)
        assert [b["incident_id"] for b in hook.bodies()] == ["brand:acme/conversion-drop/20191010T03"]
        ended = runner.invoke(
            cli,
            ["--warehouse", warehouse, "incidents", "unmute", "--segment", "brand:acme"]
            + ["--step", "traffic"],
        )
        assert ended.output == "Unmuted brand:acme traffic (1 mute(s) ended).\n", ended.output
        after = send_alerts(warehouse, settings, rows, sinks=["webhook"])
        assert (after.sent, after.muted) == (1, 0)
    assert Counter(b["incident_id"] for b in hook.bodies()) == {
        "brand:acme/conversion-drop/20191010T03": 1,
        "brand:acme/traffic-drop/20191010T09": 1,
    }


def test_quiet_hours_hold_the_no_data_incident_and_its_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daily `[[silences]]` window with step = "no_data" around now: a silence past
    no_data_minutes is recorded as muted and nothing is sent, its end closes it in the record
    only; without the window the same silence is sent, then resolved."""
    import time

    from funnelpulse.anomaly.no_data import NoDataWatch

    now = datetime.now(UTC)
    quiet = (
        f'[[silences]]\nfrom = "{now - timedelta(hours=1):%H:%M}"\n'
        f'to = "{now + timedelta(hours=1):%H:%M}"\nstep = "no_data"\nnote = "quiet hours"\n'
    )
    received: dict[str, list[str]] = {}
    for name, text in (("quiet", quiet), ("loud", "")):
        folder = tmp_path / name
        folder.mkdir()
        config = write_config(folder, text, warehouse=str(folder / "wh"))
        with receiver() as hook:
            monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", hook.url + "/hook")
            monkeypatch.setenv("FUNNELPULSE_NO_DATA_MINUTES", "0.01")  # 0.6 s
            settings = load_settings(config)
            watch = NoDataWatch(settings.warehouse, settings, ["webhook"], check_every_s=0.1)
            time.sleep(0.8)
            watch.tick()
            time.sleep(0.3)
            watch.tick()  # a later check opens nothing more
            watch.arrived()
            received[name] = [b["incident_id"] for b in hook.bodies()]
            statuses = sorted(
                (r["incident_id"].split(":")[-1], r["status"]) for r in rows_of(settings.warehouse)
            )
        (opened,) = watch.opened
        if name == "quiet":
            assert received[name] == []
            assert statuses == sorted([("resolved", "muted"), (opened.split(":")[-1], "muted")])
            muted = next(r for r in rows_of(settings.warehouse) if r["incident_id"] == opened)
            assert muted["error"] == "maintenance window 1 (quiet hours)"
        else:
            assert received[name] == [opened, opened + ":resolved"]


def test_routes_send_critical_to_pagerduty_and_slack_and_low_to_the_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    alerts_file = tmp_path / "alerts.jsonl"
    with receiver() as pd, receiver() as slack:
        monkeypatch.setenv("FUNNELPULSE_SLACK_WEBHOOK_URL", slack.url + "/slack")
        config = write_config(
            tmp_path,
            """
[[routes]]
name = "page"
severity = "critical"
direction = "drops"
sinks = ["pagerduty"]
continue = true

[[routes]]
min_severity = "high"
sinks = ["slack"]

[[routes]]
severity = "low"
sinks = ["file"]
""",
            warehouse=str(tmp_path / "wh"),
            pagerduty_url=pd.url + "/v2/enqueue",
            alert_file=str(alerts_file),
            min_severity="low",
        )
        settings = load_settings(config)
        rows = [
            anomaly(3, segment="acme", z=-9.0),  # critical drop: pagerduty, then slack
            anomaly(5, segment="globex", z=-6.5),  # high: slack only
            anomaly(7, segment="initech", z=+4.5),  # low spike: the file only
            anomaly(9, segment="hooli", z=+9.0),  # critical spike: never pages, slack
        ]
        result = send_alerts(settings.warehouse, settings, rows)
        assert (result.sent, result.failed) == (5, 0)
    assert [e["payload"]["component"] for e in pd.bodies()] == ["brand:acme"]
    assert sorted(b["text"].split(" - ")[1].split(",")[0] for b in slack.bodies()) == [
        "brand acme",
        "brand globex",
        "brand hooli",
    ]
    lines = [json.loads(x) for x in alerts_file.read_text().splitlines()]
    assert [x["segment"] for x in lines] == ["initech"]


def test_a_receiver_down_for_three_attempts_then_the_next_run_delivers_the_rest_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    rows = [anomaly(3), anomaly(3, segment="globex"), anomaly(3, segment="initech")]
    with receiver() as pd:
        settings = load_settings(warehouse=str(tmp_path / "wh"), pagerduty_url=pd.url)
        pd.refuse = 3  # the first incident's three attempts all fail
        first = send_alerts(
            settings.warehouse, settings, rows, sinks=["pagerduty"], retry_delays_s=FAST
        )
        assert (first.sent, first.failed, pd.refused) == (2, 1, 3)
        assert not first.ok and "HTTP 503" in first.problem()
        second = send_alerts(
            settings.warehouse, settings, rows, sinks=["pagerduty"], retry_delays_s=FAST
        )
        assert (second.sent, second.failed, second.skipped) == (1, 0, 2)
    keys = Counter(e["dedup_key"] for e in pd.bodies())
    assert sorted(keys.values()) == [1, 1, 1]


def test_incidents_commands_ack_resolve_mute_and_explain_with_pagerduty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("FUNNELPULSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    warehouse = str(tmp_path / "wh")
    rows = [anomaly(3), anomaly(4), anomaly(5, segment="globex", z=-6.5)]
    table = pa.Table.from_pylist(
        [r | {"window_date": r["window_start"].date(), "window_hours": 1} for r in rows],
        schema=ANOMALY_SCHEMA,
    )
    tables.write(tables.table_path(warehouse, tables.ANOMALIES), table)
    runner = CliRunner()
    with receiver() as pd:
        monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_URL", pd.url + "/v2/enqueue")
        settings = load_settings(warehouse=warehouse)
        first = send_alerts(warehouse, settings, rows, sinks=["pagerduty"])
        assert first.sent == 2

        def run(*args: str) -> Any:
            return runner.invoke(cli, ["--warehouse", warehouse, "incidents", *args])

        listed = run("list", "--open")
        assert listed.exit_code == 0, listed.output
        assert listed.output.splitlines()[1:] == [
            "brand:globex/conversion-drop/20191010T05 open          high      "
            "2019-10-10 05:00   60 min  brand:globex conversion drop",
            "brand:acme/conversion-drop/20191010T03   open          high      "
            "2019-10-10 03:00      2 h  brand:acme conversion drop",
        ]
        acme = "brand:acme/conversion-drop/20191010T03"
        acked = run("ack", acme, "--note", "checkout team on it", "--by", "ana")
        assert acked.exit_code == 0, acked.output
        assert acked.output == f"Acknowledged {acme}: 1 sink(s) told, 0 failed.\n"
        again = run("ack", acme)
        assert again.output == f"{acme} was already acknowledged: nothing sent again.\n"
        shown = run("show", acme)
        assert "state:    acknowledged (by ana at " in shown.output
        assert "acknowledged by ana at " in shown.output and ": checkout team on it" in shown.output
        assert "route:    no route matched: default route to console (alert_sinks)" in shown.output
        resolved = run("resolve", acme, "--by", "bo")
        assert resolved.exit_code == 0, resolved.output
        still_open = run("list", "--open", "--format", "json")
        assert [x["id"] for x in json.loads(still_open.output)] == [
            "brand:globex/conversion-drop/20191010T05"
        ]

        muted = run("mute", "--segment", "brand:globex", "--for", "2h", "--note", "deploy")
        assert muted.exit_code == 0 and muted.output.startswith("Muted brand:globex until ")
        states = {x["id"]: x["state"] for x in json.loads(run("list", "--format", "json").output)}
        assert states == {acme: "resolved", "brand:globex/conversion-drop/20191010T05": "muted"}
        assert run("unmute", "--segment", "brand:globex").exit_code == 0
        states = {x["id"]: x["state"] for x in json.loads(run("list", "--format", "json").output)}
        assert states["brand:globex/conversion-drop/20191010T05"] == "open"

        explained = run("routes", "--explain", acme)
        assert "no route matched: default route to console" in explained.output

        bad = run("ack", "brand:nope/conversion-drop/20191010T03")
        assert (
            bad.exit_code == 1
            and "Error: No incident 'brand:nope/conversion-drop/20191010T03'" in bad.output
        )
        bad = run("mute", "--segment", "acme", "--for", "2h")  # bad flags: exit 2
        assert bad.exit_code == 2 and "must be written dimension:value" in bad.output
        bad = run("mute", "--segment", "brand:acme", "--for", "2x")
        assert bad.exit_code == 2 and "Write it like 30m, 2h or 1d" in bad.output
    events = [(e["event_action"], e["dedup_key"]) for e in pd.bodies()]
    key = idempotency_key(acme)
    assert events[2:] == [("acknowledge", key), ("resolve", key)]
    assert sorted(a for a, _ in events[:2]) == ["trigger", "trigger"]
    acts = tables.read(tables.table_path(warehouse, tables.INCIDENT_ACTIONS)).to_pylist()
    acts.sort(key=lambda a: a["at"])
    assert [(a["action"], a["by"]) for a in acts][:3] == [
        ("acknowledge", "ana"),
        ("resolve", "bo"),
        ("mute", acts[2]["by"]),
    ]
    assert acts[2]["note"] == "deploy" and acts[3]["action"] == "unmute"


README_ROUTES = """
[[routes]]
name = "page"
severity = "critical"
direction = "drops"
sinks = ["pagerduty", "alertmanager"]
continue = true

[[routes]]
min_severity = "high"
sinks = ["slack"]

[[routes]]
severity = "low"
sinks = ["file"]
"""


def test_routes_explain_prints_the_routes_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("FUNNELPULSE_")]:
        monkeypatch.delenv(name)
    warehouse = str(tmp_path / "wh")
    config = write_config(tmp_path, README_ROUTES, warehouse=warehouse)
    rows = [anomaly(3, z=-9.0)]
    table = pa.Table.from_pylist(
        [r | {"window_date": r["window_start"].date(), "window_hours": 1} for r in rows],
        schema=ANOMALY_SCHEMA,
    )
    tables.write(tables.table_path(warehouse, tables.ANOMALIES), table)
    done = CliRunner().invoke(
        cli,
        [
            "--config",
            str(config),
            "incidents",
            "routes",
            "--explain",
            "brand:acme/conversion-drop/20191010T03",
        ],
    )
    assert done.exit_code == 0, done.output
    assert done.output == (
        "Incident brand:acme/conversion-drop/20191010T03:\n"
        "  route 1 (page): matched severity in ['critical'], direction drops -> pagerduty, "
        "alertmanager, continue\n"
        "  route 2: matched severity >= high -> slack\n"
        "  sinks: pagerduty, alertmanager, slack\n"
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            '[[routes]]\nsink = ["slack"]\n',
            "[[routes]] number 1 has an unknown key 'sink' (did you mean 'sinks'?)",
        ),
        ('[[routes]]\nsinks = ["pager"]\n', "sinks 'pager' is not one of console, file"),
        ('[[routes]]\nsegment = "acme"\nsinks = ["file"]\n', "must be written dimension:value"),
        (
            '[[silences]]\nstart = "2026-12-24T02:00:00Z"\n',
            "[[silences]] number 1 needs both start and end",
        ),
        (
            '[[silences]]\nfrom = "25:00"\nto = "01:00"\n',
            'from must be a time of day as "HH:MM" (UTC)',
        ),
    ],
)
def test_bad_routes_and_silences_are_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, error: str
) -> None:
    for name in [n for n in os.environ if n.startswith("FUNNELPULSE_")]:
        monkeypatch.delenv(name)
    config = write_config(tmp_path, text)
    done = CliRunner().invoke(cli, ["--config", str(config), "incidents", "list"])
    assert done.exit_code == 1, done.output
    assert done.output.startswith("Error: In ") and error in done.output, done.output
    assert "Traceback" not in done.output


@pytest.mark.slow
def test_a_stream_whose_source_stops_raises_one_no_data_incident_and_resolves_it(
    tmp_path: Path,
) -> None:
    """no_data_minutes = 0.05 (3 s): the incident must arrive within 3 s + one check interval
    (5 s) of the last event, and its resolution once a new file brings events."""
    import signal
    import subprocess
    import sys
    import time

    from funnelpulse.generate import generate_events, write_events

    folder = tmp_path / "incoming"
    folder.mkdir()
    events = generate_events(4_000, seed=3, days=2, brands=5)
    half = events.num_rows // 2
    write_events(events.slice(0, half), folder / "a.csv")
    alerts = tmp_path / "alerts.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELPULSE_")}
    env |= {
        "FUNNELPULSE_ALERT_FILE": str(alerts),
        "FUNNELPULSE_NO_DATA_MINUTES": "0.05",
        "PYTHONUNBUFFERED": "1",
    }
    args = [sys.executable, "-m", "funnelpulse", "--warehouse", str(tmp_path / "wh"), "stream"]
    args += ["--source", f"files://{folder}", "--alert", "--sink", "file"]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def no_data_lines() -> list[dict[str, Any]]:
        found = [json.loads(x) for x in alerts.read_text().splitlines()] if alerts.exists() else []
        return [x for x in found if x["incident_id"].startswith("shop:all:no_data:")]

    try:
        deadline = time.monotonic() + 240
        while not no_data_lines() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        opened = no_data_lines()
        assert len(opened) == 1, proc.stderr.read() if proc.poll() is not None else opened
        seen_at = datetime.now(UTC)
        # start is the wall-clock time of the last arrival: from there to the sink took the
        # limit (3 s) plus at most one check interval (5 s), give or take this loop's polling
        silent = seen_at - datetime.fromisoformat(opened[0]["start"])
        assert timedelta(seconds=3) <= silent <= timedelta(seconds=3 + 5 + 1), silent
        assert opened[0]["steps"] == ["no_data"] and opened[0]["severity"] == "high"
        assert opened[0]["message"].startswith("[HIGH] NO DATA - shop all: no event arrived for")
        time.sleep(1.0)
        assert len(no_data_lines()) == 1  # one incident per silence, not one per check
        write_events(events.slice(half), folder / "b.csv")
        deadline = time.monotonic() + 120
        while len(no_data_lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        both = no_data_lines()
        assert [x["incident_id"] for x in both[:2]] == [
            opened[0]["incident_id"],
            opened[0]["incident_id"] + ":resolved",
        ], both
        assert both[1]["message"].startswith("[RESOLVED] NO DATA - shop all: events arrive again")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)


KILLABLE = """
import sys
from datetime import UTC, datetime, timedelta
from funnelpulse.anomaly.alerts import send_alerts
from funnelpulse.config import load_settings
day = datetime(2019, 10, 10, 3, tzinfo=UTC)
rows = [{"anomaly_id": "a", "window_start": day, "window_end": day + timedelta(hours=1),
         "dimension": "brand", "segment": "acme", "step": "conversion", "type": "drop",
         "observed_rate": 0.05, "expected_rate": 0.25, "z": -7.0, "severity": "high",
         "lost_purchases": 12.0, "lost_revenue": 60.0, "root_cause": None}]
s = load_settings(warehouse=sys.argv[1], pagerduty_url=sys.argv[2])
r = send_alerts(s.warehouse, s, rows, sinks=["pagerduty"], as_of=day + timedelta(hours=9))
print(r.summary())
"""


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("kill_at", ["alerts.after_send", "alerts.resolve_after_send"])
def test_kill_9_between_a_pagerduty_event_and_its_record_repeats_only_that_event_same_key(
    tmp_path: Path, kill_at: str
) -> None:
    import subprocess
    import sys

    script = tmp_path / "alert.py"
    script.write_text(KILLABLE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELPULSE_")}
    env["FUNNELPULSE_PAGERDUTY_ROUTING_KEY"] = ROUTING_KEY
    wh = str(tmp_path / "wh")
    with receiver() as pd:
        args = [sys.executable, str(script), wh, pd.url]
        killed = subprocess.run(
            args,
            env=env | {"FUNNELPULSE_KILL_AT": kill_at},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert killed.returncode == -9, killed.stderr
        again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert "resent after an interrupted delivery (same idempotency key)" in again.stdout
        third = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert "0 sent, 0 failed, 2 already sent" in third.stdout
    events = [(e["event_action"], e["dedup_key"]) for e in pd.bodies()]
    key = idempotency_key("brand:acme/conversion-drop/20191010T03")
    repeated = "trigger" if kill_at == "alerts.after_send" else "resolve"
    expected = Counter({("trigger", key): 1, ("resolve", key): 1})
    expected[(repeated, key)] += 1  # the one event the crash kept from being recorded
    assert Counter(events) == expected
    assert events[-1] == ("resolve", key)
    # the repeat carries the same idempotency key header as the first delivery
    headers = Counter((e["body"]["event_action"], e["key"]) for e in pd.log)
    assert len(headers) == 2 and sorted(headers.values()) == sorted(expected.values())


def test_digest_compares_with_a_week_before_lists_incidents_and_sends_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    for name in [n for n in os.environ if n.startswith("FUNNELPULSE_")]:
        monkeypatch.delenv(name)
    warehouse = str(tmp_path / "wh")
    day, before = date(2019, 10, 10), date(2019, 10, 3)
    gold = [
        {
            "date": day,
            "brand": "acme",
            "views": 1000,
            "carts": 100,
            "purchases": 10,
            "revenue": 400.0,
        },
        {
            "date": day,
            "brand": "globex",
            "views": 500,
            "carts": 60,
            "purchases": 12,
            "revenue": 300.0,
        },
        {
            "date": before,
            "brand": "acme",
            "views": 1000,
            "carts": 110,
            "purchases": 25,
            "revenue": 1000.0,
        },
        {
            "date": before,
            "brand": "globex",
            "views": 500,
            "carts": 50,
            "purchases": 10,
            "revenue": 250.0,
        },
    ]
    tables.write(tables.table_path(warehouse, tables.GOLD_DAILY_BRAND), pa.Table.from_pylist(gold))
    rows = [anomaly(3), anomaly(4)]
    table = pa.Table.from_pylist(
        [r | {"window_date": r["window_start"].date(), "window_hours": 1} for r in rows],
        schema=ANOMALY_SCHEMA,
    )
    tables.write(tables.table_path(warehouse, tables.ANOMALIES), table)
    alerts_file = tmp_path / "digest.jsonl"
    monkeypatch.setenv("FUNNELPULSE_ALERT_FILE", str(alerts_file))
    runner = CliRunner()
    done = runner.invoke(cli, ["--warehouse", warehouse, "digest", "--date", "2019-10-10"])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        "FunnelPulse daily digest for 2019-10-10 (UTC), against 2019-10-03",
        "Views 1,500 (+0.0%), carts 160 (+0.0%), purchases 22 (-37.1%), revenue 700.00 (-44.0%).",
        "Conversion 1.47% vs 2.33% a week before.",
        "Incidents opened: 1; resolved: 0.",
        "- opened brand:acme/conversion-drop/20191010T03 (high, now open): 24.0 purchases lost",
        "Largest movers (revenue against a week before):",
        "- brand:acme: 400.00 vs 1,000.00 (-600.00)",
        "- brand:globex: 300.00 vs 250.00 (+50.00)",
    ]
    as_json = json.loads(
        runner.invoke(cli, ["--warehouse", warehouse, "digest", "--format", "json"]).output
    )
    assert as_json["date"] == "2019-10-10" and as_json["change_pct"]["revenue"] == -44.0
    assert [m["segment"] for m in as_json["movers"]] == ["brand:acme", "brand:globex"]
    sent = runner.invoke(cli, ["--warehouse", warehouse, "digest", "--sink", "file"])
    assert sent.exit_code == 0 and "Digest to file: sent" in sent.output
    again = runner.invoke(cli, ["--warehouse", warehouse, "digest", "--sink", "file"])
    assert "Digest to file: already sent" in again.output
    lines = [json.loads(x) for x in alerts_file.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["incident_id"] == "digest:2019-10-10"
    assert lines[0]["message"].startswith("FunnelPulse daily digest for 2019-10-10")
    missing = runner.invoke(cli, ["--warehouse", warehouse, "digest", "--date", "2019-10-11"])
    assert missing.exit_code == 1 and "Error: No data for 2019-10-11" in missing.output


def test_an_ack_pagerduty_refused_exits_1_and_the_next_ack_delivers_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("FUNNELPULSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    warehouse = str(tmp_path / "wh")
    rows = [anomaly(3)]
    table = pa.Table.from_pylist(
        [r | {"window_date": r["window_start"].date(), "window_hours": 1} for r in rows],
        schema=ANOMALY_SCHEMA,
    )
    tables.write(tables.table_path(warehouse, tables.ANOMALIES), table)
    acme = "brand:acme/conversion-drop/20191010T03"
    runner = CliRunner()
    with receiver() as pd:
        monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_URL", pd.url)
        settings = load_settings(warehouse=warehouse)
        assert send_alerts(warehouse, settings, rows, sinks=["pagerduty"]).sent == 1
        pd.refuse = 3  # down for every attempt of this run
        down = runner.invoke(cli, ["--warehouse", warehouse, "incidents", "ack", acme])
        assert down.exit_code == 1, down.output
        assert (
            "Acknowledged brand:acme/conversion-drop/20191010T03: 0 sink(s) told, 1 failed."
            in down.output
        )
        assert (
            "Error: 1 alert delivery did not succeed (pagerduty: pagerduty_url: HTTP 503). Run "
            "`funnelpulse incidents ack brand:acme/conversion-drop/20191010T03` again to retry them"
        ) in down.output
        up = runner.invoke(cli, ["--warehouse", warehouse, "incidents", "ack", acme])
        assert up.exit_code == 0 and "1 sink(s) told, 0 failed" in up.output
        again = runner.invoke(cli, ["--warehouse", warehouse, "incidents", "ack", acme])
        assert again.output == f"{acme} was already acknowledged: nothing sent again.\n"
    assert [e["event_action"] for e in pd.bodies()] == ["trigger", "acknowledge"]
    assert pd.refused == 3


AM_BINARY = "/usr/bin/prometheus-alertmanager"


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(AM_BINARY).exists(),
    reason="needs Debian's prometheus-alertmanager (apt-get install prometheus-alertmanager)",
)
def test_a_real_alertmanager_takes_the_alert_and_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import time
    import urllib.request

    from funnelpulse.streaming.broker import free_port

    port = free_port()
    config = tmp_path / "am.yml"
    config.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    am = subprocess.Popen(
        [AM_BINARY, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}"]
        + [f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def alerts() -> list[dict[str, Any]]:
        with urllib.request.urlopen(url + "/api/v2/alerts", timeout=5) as response:
            found: list[dict[str, Any]] = json.loads(response.read())
        return [a for a in found if a["labels"].get("alertname") == "FunnelPulseIncident"]

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url + "/-/ready", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        settings = load_settings(warehouse=str(tmp_path / "wh"), alertmanager_url=url)
        rows = [anomaly(3, segment="globex")]
        first = send_alerts(settings.warehouse, settings, rows, sinks=["alertmanager"])
        assert (first.sent, first.failed) == (1, 0), first.errors
        (firing,) = alerts()
        assert firing["status"]["state"] == "active"
        assert firing["labels"]["segment"] == "brand:globex"
        assert firing["labels"]["incident_key"] == idempotency_key(
            "brand:globex/conversion-drop/20191010T03"
        )
        assert firing["startsAt"].startswith("2019-10-10T03:00:00")
        done = send_alerts(
            settings.warehouse,
            settings,
            rows,
            sinks=["alertmanager"],
            as_of=DAY + timedelta(hours=10),
        )
        assert (done.sent, done.failed) == (1, 0), done.errors
        # the same alert (same labels) now ended: Alertmanager no longer lists it as firing
        assert alerts() == []
    finally:
        am.terminate()
        am.wait(timeout=30)


def test_a_grouped_incident_is_one_page_listed_acked_and_resolved_under_its_lasting_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One checkout break seen by the shop and three brands: one incident, one PagerDuty alert;
    `incidents list` shows it once with the segments it moved, and its ack and its batch resolve
    carry the same dedup_key as the trigger."""
    for name in [n for n in os.environ if n.startswith("FUNNELPULSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    warehouse = str(tmp_path / "wh")
    rows = [anomaly(3, segment="all", dim="shop", z=-9.0)] + [
        anomaly(3, segment=s) for s in ("acme", "globex", "initech")
    ]
    runner = CliRunner()
    shop = "shop:all/conversion-drop/20191010T03"
    with receiver() as pd:
        monkeypatch.setenv("FUNNELPULSE_PAGERDUTY_URL", pd.url + "/v2/enqueue")
        settings = load_settings(warehouse=warehouse)
        first = send_alerts(warehouse, settings, rows, sinks=["pagerduty"])
        assert (first.sent, first.failed) == (1, 0)
        listed = runner.invoke(
            cli, ["--warehouse", warehouse, "incidents", "list", "--format", "json"]
        )
        assert listed.exit_code == 0, listed.output
        (only,) = json.loads(listed.output)
        assert only["id"] == shop and only["state"] == "open"
        assert only["segments"] == ["shop:all", "brand:acme", "brand:globex", "brand:initech"]
        text = runner.invoke(cli, ["--warehouse", warehouse, "incidents", "list"]).output
        assert "shop:all conversion drop (+3 segments)" in text
        acked = runner.invoke(cli, ["--warehouse", warehouse, "incidents", "ack", shop])
        assert acked.output == f"Acknowledged {shop}: 1 sink(s) told, 0 failed.\n"
        later = send_alerts(
            warehouse, settings, rows, sinks=["pagerduty"], as_of=DAY + timedelta(hours=8)
        )
        assert (later.sent, later.updates) == (1, 1)
    events = [(e["event_action"], e["dedup_key"]) for e in pd.bodies()]
    key = idempotency_key(shop)
    assert events == [("trigger", key), ("acknowledge", key), ("resolve", key)]
