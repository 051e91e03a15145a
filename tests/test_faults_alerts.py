"""`detect --alert` killed, terminated and raced for real: the CLI in a subprocess, a real local
HTTP receiver, then exact counts of what the receiver got, keyed by the idempotency key."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from funnelpulse import Pipeline, tables
from funnelpulse.anomaly import incident_store
from funnelpulse.anomaly.alerts import idempotency_key
from funnelpulse.anomaly.scoring import SEVERITY_RANK
from funnelpulse.streaming.broker import free_port

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SECRET = "/services/T0FAULT/B0FAULT/tok3nSecret"


class Receiver:
    """A webhook endpoint that records every request it fully read, and can hold one open."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.hold_at: int | None = None  # hold the request with this 1-based number open...
        self.holding = threading.Event()  # ...set while it is held
        self.release = threading.Event()
        self.gate = threading.Event()  # every request waits for this
        self.gate.set()
        self.redirect: tuple[int, str] | None = None  # answer every POST with this redirect
        self.gets = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                receiver.gets += 1
                self.send_response(200)
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802
                import json

                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.redirect:
                    self.send_response(receiver.redirect[0])
                    self.send_header("Location", receiver.redirect[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.received.append(
                        {"key": self.headers["Idempotency-Key"], "body": body, "path": self.path}
                    )
                    number = len(receiver.received)
                receiver.gate.wait(60)
                if number == receiver.hold_at:
                    receiver.holding.set()
                    receiver.release.wait(60)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:  # the sender was killed while we held its request
                    pass

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def keys(self) -> Counter[str]:
        with self.lock:
            return Counter(r["key"] for r in self.received)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with injected incidents, built once; each test alerts on its own copy."""
    root = tmp_path_factory.mktemp("faults_alerts")
    events = root / "e.csv"
    subprocess.run(
        [sys.executable, "-m", "funnelpulse", "-q", "generate", "--shape", "plain"]
        + ["--rows", "600000"]
        + ["--out", str(events), "--days", "20", "--brands", "40", "--inject", "auto:8"]
        + ["--seed", "3"],
        check=True,
        capture_output=True,
    )
    p = Pipeline(warehouse=str(root / "wh"))
    p.ingest([events])
    p.build()
    return root / "wh"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.gate.set()
    r.release.set()
    r.server.shutdown()


@pytest.fixture
def warehouse(built: Path, tmp_path: Path) -> str:
    target = tmp_path / "wh"
    shutil.copytree(built, target)
    return str(target)


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELPULSE_")}
    return {
        **env,
        "FUNNELPULSE_WEBHOOK_URL": url,
        "FUNNELPULSE_COOLDOWN_H": "0",  # every incident is alerted, none cooled down
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def _start(warehouse: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "funnelpulse", "--warehouse", warehouse, "detect", "--alert"]
        + ["--sink", "webhook"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _run(warehouse: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = _start(warehouse, env)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _expected_keys(warehouse: str) -> set[str]:
    """The incidents detect recorded (at the default severity floor), as keys: each opening,
    and the resolution of each incident that scored normal for resolve_after_h (3) hours before
    the newest hour of the data."""
    floor = SEVERITY_RANK["medium"]
    found = [r for r in incident_store.read(warehouse) if SEVERITY_RANK[r["severity"]] >= floor]
    assert found  # the scenario has incidents to deliver
    gold = tables.read(tables.table_path(warehouse, tables.GOLD_HOURLY_BRAND))
    as_of = max(gold.column("window_start").to_pylist()) + timedelta(hours=1)
    over = [r for r in found if as_of - r["ended_at"] >= timedelta(hours=3)]
    assert over, "the data should hold incidents that are over"
    return {idempotency_key(r["incident_id"]) for r in found} | {
        idempotency_key(r["incident_id"] + ":resolved") for r in over
    }


def _statuses(warehouse: str) -> Counter[str]:
    rows = tables.read(tables.table_path(warehouse, tables.ALERTS)).to_pylist()
    return Counter(r["status"] for r in rows)


def test_a_clean_run_then_a_rerun_sends_each_incident_once(
    warehouse: str, receiver: Receiver
) -> None:
    first = _run(warehouse, _env(receiver.url))
    assert first.returncode == 0, first.stderr
    expected = _expected_keys(warehouse)
    assert len(expected) >= 3
    assert receiver.keys() == Counter(dict.fromkeys(expected, 1))
    # every payload carries its key in the body too, and the path (a secret) was used as given
    assert all(r["body"]["idempotency_key"] == r["key"] for r in receiver.received)
    assert {r["path"] for r in receiver.received} == {SECRET}
    assert f"Alert 1/{len(expected)} to webhook" in first.stderr  # progress is shown
    again = _run(warehouse, _env(receiver.url))
    assert again.returncode == 0, again.stderr
    assert f"0 sent, 0 failed, {len(expected)} already sent" in again.stdout
    assert len(receiver.received) == len(expected)


@pytest.mark.parametrize("checkpoint", ["alerts.before_send", "alerts.after_send"])
def test_killed_at_a_delivery_checkpoint_then_rerun(
    warehouse: str, receiver: Receiver, checkpoint: str
) -> None:
    killed = _run(warehouse, _env(receiver.url, FUNNELPULSE_KILL_AT=checkpoint))
    assert killed.returncode == -signal.SIGKILL
    rerun = _run(warehouse, _env(receiver.url))
    assert rerun.returncode == 0, rerun.stderr
    expected = _expected_keys(warehouse)
    got = receiver.keys()
    assert set(got) == expected
    if checkpoint == "alerts.before_send":
        # journalled as "sending" but never sent: the rerun sends it, once
        assert got == Counter(dict.fromkeys(expected, 1))
    else:
        # delivered but not yet recorded: the one unavoidable repeat, with the same key
        assert sorted(got.values()) == [1] * (len(expected) - 1) + [2]
        assert "1 resent after an interrupted delivery (same idempotency key)" in rerun.stdout
    assert _statuses(warehouse)["sent"] == len(expected)
    assert _statuses(warehouse)["sending"] == 1  # the interrupted delivery stays on record


def test_sigkill_while_the_receiver_holds_a_request(warehouse: str, receiver: Receiver) -> None:
    receiver.hold_at = 3
    proc = _start(warehouse, _env(receiver.url))
    assert receiver.holding.wait(120), "the third delivery never arrived"
    proc.kill()
    proc.wait(30)
    receiver.release.set()
    assert proc.returncode == -signal.SIGKILL
    rerun = _run(warehouse, _env(receiver.url))
    assert rerun.returncode == 0, rerun.stderr
    expected = _expected_keys(warehouse)
    got = receiver.keys()
    assert set(got) == expected
    third = receiver.received[2]["key"]
    assert got[third] == 2  # received, but the sender died before it knew: resent, same key
    assert all(n == 1 for k, n in got.items() if k != third)


def test_sigterm_finishes_the_delivery_under_way_and_nothing_repeats(
    warehouse: str, receiver: Receiver
) -> None:
    receiver.hold_at = 2
    proc = _start(warehouse, _env(receiver.url))
    assert receiver.holding.wait(120), "the second delivery never arrived"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    receiver.release.set()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Error: Stopped by SIGTERM after 2 alerts were sent and recorded" in err
    assert "Traceback" not in err
    assert len(receiver.received) == 2
    rerun = _run(warehouse, _env(receiver.url))
    assert rerun.returncode == 0, rerun.stderr
    expected = _expected_keys(warehouse)
    assert receiver.keys() == Counter(dict.fromkeys(expected, 1))
    assert "2 already sent" in rerun.stdout


def test_two_overlapping_runs_deliver_each_incident_once(
    warehouse: str, receiver: Receiver
) -> None:
    receiver.gate.clear()  # the first run blocks at its first delivery, holding the alert lock
    env = _env(receiver.url, FUNNELPULSE_ALERT_TIMEOUT_S="120")  # it waits for the answer
    first = _start(warehouse, env)
    deadline = time.monotonic() + 120
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.received, "the first run never delivered"
    second = _start(warehouse, env)
    assert second.stdout is not None
    line = second.stdout.readline()  # the detect summary: the second run is about to alert
    assert "anomalies (" in line, line
    time.sleep(1.0)
    receiver.gate.set()
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    expected = _expected_keys(warehouse)
    assert receiver.keys() == Counter(dict.fromkeys(expected, 1))
    assert "Waiting for another process that is sending alerts" in err2
    assert f"0 sent, 0 failed, {len(expected)} already sent" in out2


def test_dead_webhook_fails_fast_with_a_summary_and_no_secret(warehouse: str) -> None:
    url = f"http://127.0.0.1:{free_port()}{SECRET}"  # nothing listens there
    dead = _run(warehouse, _env(url))
    assert dead.returncode == 1
    assert "3 failed" in dead.stdout and "not attempted" in dead.stdout
    assert "Error: " in dead.stderr and "did not succeed" in dead.stderr
    assert "gave up after 3 failed deliveries in a row" in dead.stderr
    assert "retried by the next `funnelpulse detect --alert`" in dead.stderr
    for piece in ("T0FAULT", "B0FAULT", "tok3nSecret"):
        assert piece not in dead.stdout + dead.stderr
    assert _statuses(warehouse) == Counter({"failed": 3})


def test_a_webhook_answering_302_records_failures_naming_the_target_never_sent(
    warehouse: str, receiver: Receiver
) -> None:
    receiver.redirect = (302, "https://hooks.example.test/new-home")
    run = _run(warehouse, _env(receiver.url))
    assert run.returncode == 1
    assert receiver.gets == 0 and receiver.received == []  # no POST taken, no GET made
    assert "redirect to https://hooks.example.test/new-home not followed" in run.stderr
    statuses = _statuses(warehouse)
    assert statuses["sent"] == 0 and statuses["failed"] >= 1
    # the receiver fixed: the next run delivers every incident, once
    receiver.redirect = None
    fixed = _run(warehouse, _env(receiver.url))
    assert fixed.returncode == 0, fixed.stderr
    assert receiver.keys() == Counter(dict.fromkeys(_expected_keys(warehouse), 1))


def test_a_hanging_webhook_gets_one_attempt_per_incident_per_run(
    warehouse: str, receiver: Receiver
) -> None:
    receiver.gate.clear()  # every request is read, then left without an answer
    hung = _run(warehouse, _env(receiver.url, FUNNELPULSE_ALERT_TIMEOUT_S="2"))
    assert hung.returncode == 1
    tried = receiver.keys()
    assert len(tried) == 3 and set(tried.values()) == {1}  # 3 in a row, then the sink is left
    assert "it may have arrived" in hung.stderr and "gave up after 3" in hung.stderr
    receiver.gate.set()
    again = _run(warehouse, _env(receiver.url))
    assert again.returncode == 0, again.stderr
    expected = _expected_keys(warehouse)
    # the next run sends what got no answer again, with the same key; nothing else repeats
    assert receiver.keys() == Counter({k: 2 if k in tried else 1 for k in expected})
