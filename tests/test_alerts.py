"""Alert sinks for real: a local HTTP server (webhook and Slack) and a local SMTP server."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
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
        Recorder.received.append(
            {"path": self.path, "body": body, "key": self.headers["Idempotency-Key"]}
        )
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
    assert incidents[0].lost_purchases == 36.0  # every step counts: 12 per hour over 3 hours


def test_incident_loss_counts_every_step_once() -> None:
    # a rate-only incident (cart_to_purchase alone) carries its row's loss, not 0.0
    rate_only = anomaly(3, step="cart_to_purchase") | {"lost_purchases": 15.97}
    assert group_incidents([rate_only])[0].lost_purchases == 15.97
    # the same hour seen by conversion (12) and its sub-steps (8 + 7): the same purchases, once
    hour = [
        anomaly(3),
        anomaly(3, step="view_to_cart") | {"lost_purchases": 8.0},
        anomaly(3, step="cart_to_purchase") | {"lost_purchases": 7.0},
    ]
    assert group_incidents(hour)[0].lost_purchases == 15.0
    # fewer views adds to a lower rate; a 3-hour window row counts once, spread over its hours
    long = anomaly(4, step="cart_to_purchase") | {
        "window_end": datetime(2019, 10, 10, 7, tzinfo=UTC),
        "window_hours": 3,
        "lost_purchases": 30.0,
    }
    traffic = anomaly(3, step="traffic") | {"lost_purchases": 5.0}
    incident = group_incidents([traffic, anomaly(3), long])
    assert len(incident) == 1 and incident[0].lost_purchases == 5.0 + 12.0 + 30.0


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
    # a network error is retried; a missing setting cannot be fixed by retrying
    assert {r["sink"]: r["attempts"] for r in recorded} == {"slack": 2, "webhook": 1}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/services/T000/B000?token=SECRET TOKEN42",  # a space: InvalidURL
        "http://127.0.0.1:9/services/T000/B000?token=SECRET\nTOKEN42",  # a control character
        "127.0.0.1:9/services/T000/B000?token=SECRETTOKEN42",  # no scheme
        "http://user:SECRETPASS42@127.0.0.1:9/services/T000/B000?token=SECRETTOKEN42",
    ],
)
def test_no_piece_of_a_malformed_secret_url_is_recorded_or_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", url)
    settings = load_settings(warehouse=str(tmp_path / "wh"))
    with caplog.at_level("DEBUG"):
        result = send_alerts(
            settings.warehouse, settings, [anomaly(3)], sinks=["webhook"], retry_delays_s=(0.01,)
        )
    assert (result.sent, result.failed) == (0, 1)
    recorded = tables.read(tables.table_path(settings.warehouse, tables.ALERTS)).to_pylist()
    seen = " ".join(str(v) for r in recorded for v in r.values()) + caplog.text + result.problem()
    assert "FUNNELPULSE_WEBHOOK_URL" in recorded[0]["error"]
    for piece in ("T000", "B000", "SECRET", "TOKEN42", "services", "SECRETPASS42", "user:"):
        assert piece.lower() not in seen.lower(), (piece, seen)


def test_scrub_removes_every_piece_whatever_the_exception_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from funnelpulse.anomaly.sinks import scrub

    monkeypatch.setenv(
        "FUNNELPULSE_SLACK_WEBHOOK_URL", "https://hooks.example.com/services/T9ABC/B8XYZ/zk3Lq9pW"
    )
    monkeypatch.setenv("FUNNELPULSE_SMTP_PASSWORD", "hunter2-Secret!")
    text = (
        "InvalidURL: '/services/T9ABC/B8XYZ/zk3Lq9pW' or %2Fservices%2FT9ABC and B8XYZ/zk3Lq9pW; "
        "login failed for hunter2-Secret! (hunter2)"
    )
    clean = scrub(text)
    for piece in ("T9ABC", "B8XYZ", "zk3Lq9pW", "hunter2", "Secret"):
        assert piece not in clean, clean
    assert clean.startswith("InvalidURL: ")
    assert "hooks.example.com" in scrub("cannot reach hooks.example.com")  # the host is no secret


def test_window_counts_loss_and_cause_in_the_message() -> None:
    from funnelpulse.anomaly.alerts import message

    checkout = anomaly(3, step="cart_to_purchase") | {
        "window_start": datetime(2019, 10, 10, 3, tzinfo=UTC),
        "window_end": datetime(2019, 10, 10, 5, tzinfo=UTC),
        "window_hours": 2,
        "numerator": 3,
        "denominator": 35,
        "observed_rate": 3 / 35,
        "expected_rate": 16 / 35,
        "lost_purchases": 13.0,
        "lost_revenue": 412.5,
    }
    rate_only = group_incidents([checkout])[0]
    text = message(rate_only, {checkout["anomaly_id"]: checkout})
    assert (
        "brand acme, 2019-10-10 03:00-05:00 UTC. Window that fired: 2 h (2019-10-10 03:00-05:00)"
        in text
    )
    assert "3 of 35 carts bought, 16 expected (8.6% vs 45.7% expected" in text
    assert "Estimated lost purchases 13.0, revenue 412.50" in text
    assert text.endswith("Root cause: conversion: price_band <10 explains 90% (rate)")
    # without a window_hours column an hourly row says 1 h; traffic counts are views
    hourly = anomaly(4, step="traffic") | {"observed_rate": 40.0, "expected_rate": 400.0}
    hourly.pop("root_cause")
    text = message(group_incidents([hourly])[0], {hourly["anomaly_id"]: hourly})
    assert "Window that fired: 1 h (2019-10-10 04:00-05:00): 40 views, 400 expected" in text


HOSTILE = "![x](http://evil.test/pixel.png) <http://evil.test|click> &amp; <!channel> *b*\n\x1b[31m"


def test_hostile_names_are_escaped_for_slack_and_keys_sent_everywhere(
    tmp_path: Path, http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelpulse.anomaly.alerts import idempotency_key

    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", http_server + "/hook")
    monkeypatch.setenv("FUNNELPULSE_SLACK_WEBHOOK_URL", http_server + "/slack")
    settings = load_settings(warehouse=str(tmp_path / "wh"))
    row = anomaly(3, segment=HOSTILE)
    result = send_alerts(settings.warehouse, settings, [row], sinks=["webhook", "slack"])
    assert result.sent == 2
    key = idempotency_key(group_incidents([row])[0].incident_id)
    assert key.startswith("fp-") and len(key) == 35
    by_path = {r["path"]: r for r in Recorder.received}
    assert by_path["/hook"]["key"] == by_path["/slack"]["key"] == key
    assert by_path["/hook"]["body"]["idempotency_key"] == key
    assert by_path["/hook"]["body"]["segment"] == HOSTILE  # JSON carries the value as data
    slack = by_path["/slack"]["body"]
    assert slack["idempotency_key"] == key and slack["mrkdwn"] is False
    assert slack["unfurl_links"] is False and slack["unfurl_media"] is False
    text = slack["text"]
    assert "<" not in text and ">" not in text and "\x1b" not in text and "\n" not in text
    assert "&lt;http://evil.test|click&gt; &amp;amp; &lt;!channel&gt;" in text


def test_dead_webhook_gives_up_quickly_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelpulse.anomaly.alerts import GIVE_UP_AFTER

    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", "http://127.0.0.1:9/hook")  # nothing listens
    settings = load_settings(warehouse=str(tmp_path / "wh"))
    rows = [anomaly(h, segment=f"b{h}") for h in range(6)]
    steps: list[str] = []

    class Seen:
        def step(self, message: str) -> None:
            steps.append(message)

    result = send_alerts(
        settings.warehouse,
        settings,
        rows,
        sinks=["webhook"],
        retry_delays_s=(0.01,),
        progress=Seen(),
    )
    assert (result.sent, result.failed, result.pending) == (0, GIVE_UP_AFTER, 6 - GIVE_UP_AFTER)
    assert not result.ok
    assert "Connection refused" in result.problem() and "gave up after 3" in result.problem()
    assert [s.split(":")[0] for s in steps] == [f"Alert {i}/6 to webhook" for i in (1, 2, 3)]
    recorded = tables.read(tables.table_path(settings.warehouse, tables.ALERTS)).to_pylist()
    assert sorted(r["status"] for r in recorded) == ["failed"] * GIVE_UP_AFTER
    # a spent time budget leaves everything for the next run
    later = send_alerts(settings.warehouse, settings, rows, sinks=["webhook"], budget_s=0)
    assert (later.sent, later.failed, later.pending) == (0, 0, 6)


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
        hostile = anomaly(4, segment="<img src=http://evil.test/p.png> & co\nBcc: x@evil.test")
        result = send_alerts(settings.warehouse, settings, [anomaly(3), hostile], sinks=["email"])
    finally:
        controller.stop()
    assert result.sent == 2
    assert len(inbox.messages) == 2
    mail, evil = inbox.messages
    assert mail["To"] == "oncall@example.com"
    assert mail["Subject"] == "FunnelPulse high: brand acme"
    assert "conversion drop" in mail.get_payload()[0].get_payload()
    from funnelpulse.anomaly.alerts import idempotency_key

    key = idempotency_key(group_incidents([anomaly(3)])[0].incident_id)
    assert mail["X-FunnelPulse-Incident"] == key and key in mail["Message-ID"]
    # a hostile segment: no header injection, HTML part escaped, text part plain
    assert evil["Bcc"] is None
    subject = " ".join(evil["Subject"].split())  # undo header folding
    assert (
        subject == "FunnelPulse high: brand <img src=http://evil.test/p.png> & co Bcc: x@evil.test"
    )
    text, html_part = (p.get_payload(decode=True).decode() for p in evil.get_payload())
    assert (
        "<img" not in html_part and "&lt;img src=http://evil.test/p.png&gt; &amp; co" in html_part
    )
    assert "<img src=http://evil.test/p.png> & co Bcc: x@evil.test" in text


def test_unknown_sink_is_a_clear_error(tmp_path: Path) -> None:
    from funnelpulse.errors import ConfigError

    settings = load_settings(warehouse=str(tmp_path / "wh"))
    with pytest.raises(ConfigError, match="Unknown alert sink 'pager'"):
        send_alerts(settings.warehouse, settings, [anomaly(3)], sinks=["pager"])


class Redirector(BaseHTTPRequestHandler):
    """`/r<code>` answers that redirect to `/final`; `/final` records what reached it."""

    seen: list[dict[str, Any]] = []

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/r"):
            code = int(self.path[2:5])
            self.send_response(code)
            self.send_header("Location", "/final")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        Redirector.seen.append(
            {
                "method": self.command,
                "body": json.loads(body) if body else None,
                "key": self.headers.get("Idempotency-Key"),
            }
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET = _handle  # noqa: N815

    def log_message(self, *args: Any) -> None:
        return None


def test_a_redirect_keeps_the_post_or_is_a_failure_naming_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Redirector.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for code in (307, 308):  # followed: the same POST, body and key reach the target
            monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", f"{base}/r{code}")
            settings = load_settings(warehouse=str(tmp_path / f"wh{code}"))
            result = send_alerts(settings.warehouse, settings, [anomaly(3)], sinks=["webhook"])
            assert (result.sent, result.failed) == (1, 0)
            got = Redirector.seen.pop()
            assert got["method"] == "POST" and got["body"]["segment"] == "acme"
            assert got["key"] == got["body"]["idempotency_key"]
        for code in (301, 302, 303):  # not followed: a failure that names the target
            monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", f"{base}/r{code}")
            monkeypatch.setenv("FUNNELPULSE_SLACK_WEBHOOK_URL", f"{base}/r{code}")
            settings = load_settings(warehouse=str(tmp_path / f"wh{code}"))
            result = send_alerts(
                settings.warehouse, settings, [anomaly(3)], sinks=["webhook", "slack"]
            )
            assert (result.sent, result.failed) == (0, 2)
            recorded = tables.read(tables.table_path(settings.warehouse, tables.ALERTS))
            rows = recorded.to_pylist()
            assert sorted(r["status"] for r in rows) == ["failed", "failed"]
            for row in rows:
                assert f"HTTP {code} redirect to {base}/final not followed" in row["error"]
                assert row["attempts"] == 1  # a redirect is configuration: no retry
            assert f"redirect to {base}/final" in result.problem()
        assert Redirector.seen == []  # no body-less GET, nothing recorded as sent
    finally:
        server.shutdown()


class Slow(BaseHTTPRequestHandler):
    """Reads the whole request, records it, then answers only after `delay_s`."""

    seen: list[str] = []
    delay_s = 0.0
    status = 200

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        Slow.seen.append(self.headers["Idempotency-Key"])
        time.sleep(Slow.delay_s)
        try:
            self.send_response(Slow.status)
            self.end_headers()
        except OSError:  # the sender gave up waiting
            pass

    def log_message(self, *args: Any) -> None:
        return None


def test_a_hanging_receiver_gets_one_attempt_per_run_and_the_next_run_resends_with_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelpulse.anomaly.alerts import idempotency_key

    Slow.seen, Slow.delay_s, Slow.status = [], 1.5, 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", f"http://127.0.0.1:{server.server_address[1]}")
    settings = load_settings(warehouse=str(tmp_path / "wh"), cooldown_h=0, alert_timeout_s=0.5)
    rows = [anomaly(3, segment="a"), anomaly(3, segment="b")]
    keys = sorted(idempotency_key(i.incident_id) for i in group_incidents(rows))
    try:
        first = send_alerts(
            settings.warehouse, settings, rows, sinks=["webhook"], retry_delays_s=(0.01, 0.01)
        )
        assert (first.sent, first.failed) == (0, 2)
        assert sorted(Slow.seen) == keys  # each once: a timeout is never retried in the run
        recorded = tables.read(tables.table_path(settings.warehouse, tables.ALERTS)).to_pylist()
        assert [r["attempts"] for r in recorded] == [1, 1]
        assert all("it may have arrived" in r["error"] for r in recorded)
        # the next run sends both again, with the same keys; then nothing repeats
        Slow.delay_s = 0.0
        second = send_alerts(settings.warehouse, settings, rows, sinks=["webhook"])
        assert (second.sent, second.failed) == (2, 0)
        assert sorted(Slow.seen) == sorted(keys * 2)
        third = send_alerts(settings.warehouse, settings, rows, sinks=["webhook"])
        assert (third.sent, third.skipped) == (0, 2) and len(Slow.seen) == 4
        # a 429 or a 5xx is retried in the run: the receiver certainly did not take it
        for status in (429, 503):
            Slow.seen, Slow.status = [], status
            wh = str(tmp_path / f"wh{status}")
            result = send_alerts(
                wh, settings, rows[:1], sinks=["webhook"], retry_delays_s=(0.01, 0.01)
            )
            first_key = idempotency_key(group_incidents(rows[:1])[0].incident_id)
            assert result.failed == 1 and Slow.seen == [first_key] * 3
            assert tables.read(tables.table_path(wh, tables.ALERTS)).to_pylist()[0]["attempts"] == 3
    finally:
        server.shutdown()


def test_a_live_notice_without_an_answer_is_sent_again_only_after_the_retry_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelpulse.anomaly import live_incidents
    from funnelpulse.anomaly.live_incidents import LiveIncident, deliver

    Slow.seen, Slow.delay_s, Slow.status = [], 1.5, 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("FUNNELPULSE_WEBHOOK_URL", f"http://127.0.0.1:{server.server_address[1]}")
    settings = load_settings(warehouse=str(tmp_path / "wh"), cooldown_h=0, alert_timeout_s=0.5)
    start = datetime(2019, 10, 10, 9, tzinfo=UTC)
    incident = LiveIncident(
        "brand:acme:2019-10-10T09", "brand", "acme", "open", "conversion", "drop", "high",
        start, start, start, None, start + timedelta(minutes=20), 20.0, 10, 0.01, 0.05, 400.0,
        -6.0, 1e-9, 12.0, 60.0,
    )  # fmt: skip
    try:
        first = deliver(settings.warehouse, settings, [incident], sinks=["webhook"])
        assert (first.sent, first.failed) == (0, 1) and len(Slow.seen) == 1  # no retry in the call
        # the next check, moments later: the notice may have arrived, so it waits
        Slow.delay_s = 0.0
        soon = deliver(settings.warehouse, settings, [incident], sinks=["webhook"])
        assert (soon.sent, soon.pending) == (0, 1) and len(Slow.seen) == 1
        # once the retry delay has passed, the same key goes again, once
        monkeypatch.setattr(live_incidents, "RETRY_FAILED_AFTER_S", 0.0)
        later = deliver(settings.warehouse, settings, [incident], sinks=["webhook"])
        assert later.sent == 1 and len(Slow.seen) == 2 and Slow.seen[0] == Slow.seen[1]
        done = deliver(settings.warehouse, settings, [incident], sinks=["webhook"])
        assert (done.sent, done.skipped) == (0, 1) and len(Slow.seen) == 2
    finally:
        server.shutdown()
