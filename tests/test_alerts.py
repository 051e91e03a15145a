"""Alert sinks for real: a local HTTP server (webhook and Slack) and a local SMTP server."""

from __future__ import annotations

import io
import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from funnelpulse import load_settings, tables
from funnelpulse.anomaly.alerts import send_alerts
from funnelpulse.anomaly.incidents import group_incidents

SECRET_URL_PATH = "/hooks/T000-secret-token"


def anomaly(
    hour: int, segment: str = "acme", z: float = -7.0, step: str = "conversion"
) -> dict[str, Any]:
    start = datetime(2019, 10, 10, hour, tzinfo=UTC)
    return {
        "anomaly_id": f"{segment}-{step}-{hour}",
        "window_start": start,
        "window_end": start + timedelta(hours=1),
        "dimension": "brand",
        "segment": segment,
        "step": step,
        "type": "drop" if z < 0 else "spike",
        "observed_rate": 0.05,
        "expected_rate": 0.25,
        "z": z,
        "severity": "high" if abs(z) >= 6 else "medium",
        "lost_purchases": 12.0,
        "lost_revenue": 60.0,
        "root_cause": json.dumps({"summary": "conversion: price_band <10 explains 90% (rate)"}),
    }


class Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    failures_left = 0

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Recorder.failures_left > 0:
            Recorder.failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        Recorder.received.append({"path": self.path, "body": body})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def http_server():  # type: ignore[no-untyped-def]
    Recorder.received = []
    Recorder.failures_left = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_grouping_consecutive_hours_into_incidents() -> None:
    rows = [
        anomaly(3),
        anomaly(4, step="view_to_cart"),
        anomaly(5),
        anomaly(8),
        anomaly(3, segment="other"),
    ]
    incidents = group_incidents(rows)
    assert [(i.segment, i.start.hour, i.end.hour) for i in incidents] == [
        ("acme", 3, 6),
        ("other", 3, 4),
        ("acme", 8, 9),
    ]
    assert incidents[0].steps == ["conversion", "view_to_cart"]
    assert incidents[0].lost_purchases == 24.0  # conversion rows only, not the overlapping step


def test_webhook_and_slack_once_per_incident_with_retry(
    tmp_path: Path, http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", http_server + SECRET_URL_PATH)
    monkeypatch.setenv("FUNNELPULSE_SLACK_WEBHOOK_URL", http_server + "/slack")
    settings = load_settings(warehouse=str(tmp_path / "wh"))
    rows = [anomaly(3), anomaly(4), anomaly(9, segment="other", z=-4.5)]
    Recorder.failures_left = 1  # the first POST fails: delivery is retried
    result = send_alerts(
        settings.warehouse, settings, rows, sinks=["webhook", "slack"], retry_delays_s=(0.01, 0.01)
    )
    assert (result.sent, result.failed) == (4, 0)
    paths = sorted(r["path"] for r in Recorder.received)
    assert paths == ["/hooks/T000-secret-token"] * 2 + ["/slack"] * 2
    hook = next(
        r["body"]
        for r in Recorder.received
        if r["path"] == SECRET_URL_PATH and r["body"]["segment"] == "acme"
    )
    assert (
        hook["start"] == "2019-10-10T03:00:00+00:00" and hook["end"] == "2019-10-10T05:00:00+00:00"
    )
    assert "price_band <10 explains 90%" in hook["message"]
    slack = next(r["body"] for r in Recorder.received if r["path"] == "/slack")
    assert slack["text"].startswith(":rotating_light: [")

    # a restart with the same anomalies sends nothing again
    again = send_alerts(
        settings.warehouse, settings, rows, sinks=["webhook", "slack"], retry_delays_s=(0.01,)
    )
    assert (again.sent, again.skipped) == (0, 4)
    assert len(Recorder.received) == 4
    recorded = tables.read(tables.table_path(settings.warehouse, tables.ALERTS)).to_pylist()
    assert sorted(r["status"] for r in recorded) == ["sent"] * 4
    assert (
        next(r for r in recorded if r["sink"] == "webhook" and r["segment"] == "acme")["attempts"]
        == 2
    )


def test_failures_are_recorded_without_secrets_and_never_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "http://127.0.0.1:9/services/T0/B0/very-secret"
    monkeypatch.setenv("FUNNELPULSE_SLACK_WEBHOOK_URL", secret)
    monkeypatch.delenv("FUNNELPULSE_WEBHOOK_URL", raising=False)
    settings = load_settings(warehouse=str(tmp_path / "wh"))
    result = send_alerts(
        settings.warehouse,
        settings,
        [anomaly(3)],
        sinks=["slack", "webhook"],
        retry_delays_s=(0.01,),
    )
    assert (result.sent, result.failed) == (0, 2)
    recorded = tables.read(tables.table_path(settings.warehouse, tables.ALERTS)).to_pylist()
    errors = {r["sink"]: r["error"] for r in recorded}
    assert (
        "very-secret" not in errors["slack"] and "FUNNELPULSE_SLACK_WEBHOOK_URL" in errors["slack"]
    )
    assert errors["webhook"] == "FUNNELPULSE_WEBHOOK_URL is not set"
    assert all(r["attempts"] == 2 for r in recorded)


def test_cooldown_severity_floor_console_and_file(tmp_path: Path) -> None:
    settings = load_settings(
        warehouse=str(tmp_path / "wh"),
        alert_file=str(tmp_path / "alerts.jsonl"),
        cooldown_h=6,
        min_severity="high",
    )
    stream = io.StringIO()
    rows = [anomaly(3), anomaly(6), anomaly(12), anomaly(20, segment="small", z=-4.2)]
    result = send_alerts(
        settings.warehouse, settings, rows, sinks=["console", "file"], stream=stream
    )
    # 03:00 sent; 06:00 within 6 h of it -> cool-down; 12:00 sent; 'small' is only medium -> not alerted
    assert (result.sent, result.cooldown) == (4, 2)
    assert stream.getvalue().count("ALERT [HIGH] conversion drop - brand acme") == 2
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [x["start"][11:16] for x in lines] == ["03:00", "12:00"]


def test_email_through_a_real_smtp_server(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Inbox(Message):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[Any] = []

        def handle_message(self, message: Any) -> None:
            self.messages.append(message)

    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = load_settings(
            warehouse=str(tmp_path / "wh"),
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_to="oncall@example.com",
        )
        result = send_alerts(settings.warehouse, settings, [anomaly(3)], sinks=["email"])
    finally:
        controller.stop()
    assert result.sent == 1
    assert len(inbox.messages) == 1
    mail = inbox.messages[0]
    assert mail["To"] == "oncall@example.com"
    assert mail["Subject"] == "FunnelPulse high: brand acme"
    assert "conversion drop" in mail.get_payload()


def test_unknown_sink_is_a_clear_error(tmp_path: Path) -> None:
    from funnelpulse.errors import ConfigError

    settings = load_settings(warehouse=str(tmp_path / "wh"))
    with pytest.raises(ConfigError, match="Unknown alert sink 'pager'"):
        send_alerts(settings.warehouse, settings, [anomaly(3)], sinks=["pager"])
