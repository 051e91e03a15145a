"""`funnelpulse demo --live` end to end at an accelerated pace: the bundled broker, the stream
with live alerts and a replayed day whose checkout breaks at 12:00 UTC; the break is alerted and
every published event is consumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import fp

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_demo_live_alerts_the_checkout_break(tmp_path: Path) -> None:
    warehouse = tmp_path / "live" / "warehouse"
    done = fp(
        "--warehouse", str(warehouse), "demo", "--live", "--seconds", "20",
        "--events-per-day", "6000",
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    published = int(lines[0].split("Published ")[1].split(" events")[0].replace(",", ""))
    consumed = int(lines[0].split("consumed ")[1].rstrip(".").replace(",", ""))
    assert published == consumed > 5_000
    assert "The checkout break at 12:00 UTC was alerted." in lines
    alerts = [json.loads(x) for x in (tmp_path / "live" / "alerts.jsonl").read_text().splitlines()]
    opened = [a["incident_id"] for a in alerts if not str(a["incident_id"]).endswith(":resolved")]
    assert "shop:all/cart_to_purchase-drop/20240306T12" in opened
    assert len(opened) == len(set(opened))  # each incident alerted once
    assert "Live page: http://127.0.0.1:8501/Live" in done.stderr
    assert "event time 2024-03-06" in done.stderr  # progress while it replays


def test_ctrl_c_stops_everything_and_says_what_was_published_and_consumed(
    tmp_path: Path,
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    warehouse = tmp_path / "live" / "warehouse"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "funnelpulse", "--warehouse", str(warehouse), "demo", "--live",
            "--seconds", "90", "--events-per-day", "4000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: Ctrl-C in a terminal reaches the whole group
        env={**os.environ, "FUNNELPULSE_PROGRESS_S": "1"},
    )  # fmt: skip
    assert proc.stderr is not None
    seen, deadline = "", time.monotonic() + 400
    while "event time 2024-03-06" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "event time 2024-03-06" in seen, seen
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, seen + err
    stopped = [x for x in err.splitlines() if x.startswith("Stopped: published ")]
    assert len(stopped) == 1, seen + err
    published = int(stopped[0].split("published ")[1].split(" events")[0].replace(",", ""))
    consumed = int(stopped[0].split("consumed ")[1].split(";")[0].replace(",", ""))
    assert 0 < published < 4000 and 0 <= consumed <= published, stopped
    assert stopped[0].endswith("Everything is stopped")
    assert "Traceback" not in err and out == ""
    time.sleep(1)
    try:  # nothing of the group is left: no broker, no stream
        os.killpg(proc.pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
