"""`funnelpulse serve` end to end on 127.0.0.1: daily files landing in a watched folder, the API
serving each day, one alert per incident to a real HTTP receiver, /metrics in the Prometheus text
format, SIGTERM, kill -9 inside each step then a restart, and the landing-folder edge cases."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from receivers import Receiver, receiver
from serving import free_port

from funnelpulse import tables
from funnelpulse.anomaly import detect_state
from funnelpulse.engines.base import MODELS
from funnelpulse.funnel import GOLD_FUNNELS
from funnelpulse.pipeline import Pipeline

pytestmark = [pytest.mark.slow, pytest.mark.faults]

DAYS = 8
BREAK = [  # the checkout stops working on the last day: purchases fall to nothing for 8 hours
    {
        "id": "break",
        "kind": "checkout_broken",
        "dimension": "shop",
        "segment": "all",
        "step": "purchase",
        "start": "2019-10-08T08:00:00+00:00",
        "hours": 8,
        "factor": 0.0,
    }
]
COMPARED = [tables.BRONZE, *(m.name for m in MODELS), *GOLD_FUNNELS, tables.ANOMALIES]
# where a file was read and when rows were written differ between two runs over the same data
NOT_COMPARED = {"source_file", "ingested_at", "detected_at"}


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight daily REES46 files (60,000 events, 10 brands) with a checkout break on the last."""
    root = tmp_path_factory.mktemp("serve_data")
    labels = root / "labels.json"
    labels.write_text(json.dumps(BREAK))
    events = root / "events.csv"
    subprocess.run(
        [sys.executable, "-m", "funnelpulse", "-q", "generate", "--shape", "plain"]
        + ["--rows", "60000", "--days", str(DAYS), "--brands", "10", "--seed", "1"]
        + ["--out", str(events), "--inject", str(labels)],
        check=True,
        capture_output=True,
    )
    lines = events.read_text().splitlines()
    by_day: dict[str, list[str]] = {}
    for line in lines[1:]:
        by_day.setdefault(line[:10], []).append(line)
    out = []
    for day, rows in sorted(by_day.items()):
        path = root / "days" / f"events-{day}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join([lines[0], *rows]) + "\n")
        out.append(path)
    assert len(out) == DAYS
    return out


def snapshot(warehouse: str) -> dict[str, list[str]]:
    out = {}
    for name in COMPARED:
        rows = tables.read(tables.table_path(warehouse, name)).to_pylist()
        out[name] = sorted(
            repr(sorted((k, round(v, 6) if isinstance(v, float) else v)
                        for k, v in r.items() if k not in NOT_COMPARED))
            for r in rows
        )
    return out


@pytest.fixture(scope="module")
def batch(days: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The tables of `ingest` + `build` + `detect` over the same files, in one batch run."""
    p = Pipeline(warehouse=str(tmp_path_factory.mktemp("serve_batch") / "wh"))
    p.ingest(days)
    p.build()
    p.detect()
    return snapshot(p.warehouse)


class Serve:
    """`funnelpulse serve` as its own process on a free loopback port."""

    def __init__(self, root: Path, hook: str, *flags: str, watch: bool = True, **env: str) -> None:
        self.root = root
        self.port = free_port()
        self.log = root / f"serve-{time.monotonic_ns()}.log"
        self.token = env.get("FUNNELPULSE_API_TOKEN")
        base = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELPULSE_")}
        self.env = {
            **base,
            "FUNNELPULSE_SETTLE_S": "0.3",
            "FUNNELPULSE_SERVE_POLL_S": "0.2",
            "FUNNELPULSE_WEBHOOK_URL": hook,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.args = [sys.executable, "-m", "funnelpulse", "--warehouse", str(root / "wh")]
        self.args += ["serve", "--port", str(self.port)]
        self.args += ["--watch", str(root / "land")] if watch else []
        self.args += ["--dashboard-port", "0", *flags]
        with open(self.log, "w") as handle:
            self.proc = subprocess.Popen(self.args, cwd=root, env=self.env, stdout=handle,
                                         stderr=subprocess.STDOUT)
        self.wait(lambda: self.get("/healthz") is not None or self.proc.poll() is not None, 60)

    def get(self, path: str, token: str | None = None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                body = reply.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except OSError:
            return None
        return body.decode() if path == "/metrics" else json.loads(body)

    def ready(self) -> dict[str, Any]:
        return self.get("/readyz") or {}

    def metrics(self) -> dict[tuple[str, tuple[Any, ...]], float]:
        text = self.get("/metrics", self.token)
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def wait(self, condition: Callable[[], Any], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; serve log:\n{self.text()}")
            time.sleep(0.2)

    def idle(self, cycles: int) -> dict[str, Any]:
        """Wait until `cycles` cycles succeeded and nothing is left to do."""

        def done() -> bool:
            state = self.ready().get("watcher", {})
            return (self.ok_cycles() >= cycles and state.get("unfinished_cycle") is False
                    and state.get("waiting_files") == 0)

        self.wait(done)
        return self.ready()

    def ok_cycles(self) -> float:
        m = self.metrics()
        return m.get(("funnelpulse_cycles_total", (("result", "ok"),)), 0.0) if m else 0.0

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)  # the promise: stopped within 30 s


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def publish(source: Path, folder: Path) -> Path:
    """Publish as the README says: write under a .part name, then rename into place."""
    folder.mkdir(exist_ok=True)
    part = folder / (source.name + ".part")
    shutil.copyfile(source, part)
    os.replace(part, folder / source.name)
    return folder / source.name


def keys(r: Receiver) -> Counter[str]:
    return Counter(entry["key"] for entry in r.log)


def test_daily_files_served_one_cycle_each_the_break_alerted_once_then_sigterm(
    tmp_path: Path, days: list[Path], batch: dict[str, list[str]], hook: Receiver
) -> None:
    serve = Serve(tmp_path, hook.url + "/hook", "--alert", "--sink", "webhook",
                  FUNNELPULSE_API_TOKEN="s3cret")
    try:
        for n, day in enumerate(days, start=1):
            publish(day, tmp_path / "land")
            date = day.name[len("events-"):-len(".csv")]
            serve.wait(lambda n=n: serve.ok_cycles() >= n)
            # one cycle per file, and that cycle made the day visible through the API
            assert serve.ok_cycles() == n
            page = serve.get(f"/api/v1/tables/gold_funnel_daily_brand?since={date}&until={date}",
                             "s3cret")
            assert page["rows"], date
        state = serve.idle(DAYS)
        assert state["ready"] is True and state["watcher"]["failed_files"] == {}
        # health endpoints answer without the token; metrics and the API need it
        assert json.loads(serve.get("/metrics"))["error"].startswith("Missing or wrong token")
        m = serve.metrics()
        assert m[("funnelpulse_files_ingested_total", ())] == DAYS
        assert m[("funnelpulse_files_failed_total", ())] == 0
        assert m[("funnelpulse_rows_total", (("table", "bronze"),))] == 60_000
        assert m[("funnelpulse_part_restarts_total", (("part", "watcher"),))] == 0
        assert m[("funnelpulse_part_up", (("part", "api"),))] == 1
        assert m[("funnelpulse_last_success_timestamp_seconds", (("step", "alert"),))] > 0
        openings = [e["body"] for e in hook.log
                    if not e["body"]["incident_id"].endswith(":resolved")]
        broken = [b for b in openings if b["root"] == "shop:all" and b["kind"] == "drop"
                  and b["start"][:10] in ("2019-10-07", "2019-10-08")]
        assert len(broken) == 1, openings  # the break: one alert
        assert all(count == 1 for count in keys(hook).values())  # nothing sent twice
        # each cycle's detect was the incremental one: its record names every silver date as
        # built, so the next detect (a cycle's or a manual one) starts from it
        record = detect_state.read_state(str(tmp_path / "wh"))
        assert record is not None
        assert record["dates"] == detect_state.silver_fingerprints(str(tmp_path / "wh"))
        assert serve.stop() == 0
        assert "stopped" in serve.text()
        assert len([x for x in serve.text().splitlines() if "cycle:" in x]) == DAYS
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    assert snapshot(str(tmp_path / "wh")) == batch


@pytest.mark.parametrize(
    "checkpoint",
    [
        "ingest.bronze_committed",
        "build.gold_committed",
        "detect.anomalies_committed",
        "alerts.before_send",
        "alerts.after_send",
    ],
)
def test_kill_9_inside_a_step_then_restart_equals_a_batch_run_each_alert_once(
    tmp_path: Path, days: list[Path], batch: dict[str, list[str]], hook: Receiver,
    checkpoint: str,
) -> None:
    for day in days:
        publish(day, tmp_path / "land")
    killed = Serve(tmp_path, hook.url + "/hook", "--alert", "--sink", "webhook",
                   FUNNELPULSE_KILL_AT=checkpoint)
    assert killed.proc.wait(timeout=180) == -signal.SIGKILL, killed.text()
    again = Serve(tmp_path, hook.url + "/hook", "--alert", "--sink", "webhook")
    try:
        state = again.idle(1)
        assert state["ready"] is True, state
        assert again.stop() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()
    assert snapshot(str(tmp_path / "wh")) == batch
    sent = keys(hook)
    assert sent
    if checkpoint == "alerts.after_send":
        # delivered, not yet recorded when killed: the one repeat, under the same key
        assert sorted(sent.values()) == [1] * (len(sent) - 1) + [2]
    else:
        assert set(sent.values()) == {1}
    # each file ingested once: the restart took no file again that the warehouse already had
    # (a file killed inside its ingest is finished by the restart's recovery, which logs no line)
    ingests = again.text().count("ingest: 1 file(s)") + killed.text().count("ingest: 1 file(s)")
    assert ingests == DAYS - (1 if checkpoint.startswith("ingest.") else 0)


def test_bad_half_written_replaced_files_and_a_folder_that_vanishes(
    tmp_path: Path, days: list[Path], hook: Receiver
) -> None:
    land = tmp_path / "land"
    land.mkdir()
    serve = Serve(tmp_path, hook.url + "/hook", FUNNELPULSE_SETTLE_S="1.5")
    try:
        # a bad file: recorded with its reason, shown in /readyz and /metrics, not retried
        (land / "notes.csv").write_text("this is not,an event file\n1,2\n")
        (land / "broken.csv.gz").write_bytes(b"\x1f\x8b\x08not really gzip at all")
        publish(days[0], land)
        serve.idle(1)
        state = serve.ready()
        failed = state["watcher"]["failed_files"]
        assert sorted(failed) == [str((land / n).resolve()) for n in ("broken.csv.gz", "notes.csv")]
        assert "not in the REES46 format" in failed[str((land / "notes.csv").resolve())]
        assert "cannot be read" in failed[str((land / "broken.csv.gz").resolve())]
        assert state["ready"] is True  # a bad file does not block the others
        assert serve.metrics()[("funnelpulse_files_failed_total", ())] == 2
        # a half-written file (appended slowly, no rename) is taken once, whole
        lines = days[1].read_text().splitlines(keepends=True)
        with open(land / days[1].name, "w") as handle:
            for k in range(0, len(lines), len(lines) // 5 + 1):
                handle.writelines(lines[k : k + len(lines) // 5 + 1])
                handle.flush()
                time.sleep(0.6)
        serve.idle(2)
        assert serve.ok_cycles() == 2
        bronze = Pipeline(warehouse=str(tmp_path / "wh")).table(tables.BRONZE)
        assert bronze.num_rows == sum(len(d.read_text().splitlines()) - 1 for d in days[:2])
        # the same file replaced under its name: its rows are replaced, not added
        short = lines[: len(lines) // 2]
        (land / days[1].name).write_text("".join(short))
        serve.idle(3)
        bronze = Pipeline(warehouse=str(tmp_path / "wh")).table(tables.BRONZE)
        first = len(days[0].read_text().splitlines()) - 1
        assert bronze.num_rows == first + len(short) - 1
        # the watched folder disappears, then comes back with a new file
        land.rename(tmp_path / "gone")
        serve.wait(lambda: serve.ready()["watcher"]["missing_folders"] == [str(land)])
        assert serve.metrics()[("funnelpulse_watch_folders_missing", ())] == 1
        (tmp_path / "gone").rename(land)
        publish(days[2], land)
        serve.idle(4)
        assert serve.ready()["watcher"]["missing_folders"] == []
        assert serve.metrics()[("funnelpulse_files_ingested_total", ())] == 4
        # the bad file was never tried again
        assert serve.text().count("notes.csv failed") == 1
        assert serve.text().count("broken.csv.gz failed") == 1
        assert serve.stop() == 0
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in found.split()]


def test_a_crashed_part_is_restarted_and_counted_a_part_exiting_1_is_not(
    tmp_path: Path, hook: Receiver
) -> None:
    import socket

    (tmp_path / "land").mkdir()
    dash_port = free_port()
    # the dashboard as a supervised child: killed with -9, it is restarted and counted
    serve = Serve(tmp_path, hook.url, "--dashboard-port", str(dash_port))
    busy = socket.socket()
    try:
        serve.wait(lambda: serve.ready().get("parts", {}).get("dashboard", {}).get("state")
                   == "up" and _children(serve.proc.pid))
        [child] = _children(serve.proc.pid)
        os.kill(child, signal.SIGKILL)
        serve.wait(lambda: serve.ready()["parts"]["dashboard"]["restarts"] == 1)
        serve.wait(lambda: serve.ready()["parts"]["dashboard"]["state"] == "up"
                   and _children(serve.proc.pid) not in ([], [child]))
        m = serve.metrics()
        assert m[("funnelpulse_part_restarts_total", (("part", "dashboard"),))] == 1
        assert m[("funnelpulse_part_up", (("part", "dashboard"),))] == 1
        assert "dashboard ended (exit -9); restart 1" in serve.text()
        assert serve.stop() == 0
        assert _children(serve.proc.pid) == []
        # a dashboard that cannot start (its port is taken) exits 1: failed, not restarted
        busy.bind(("127.0.0.1", dash_port))
        busy.listen()
        serve = Serve(tmp_path, hook.url, "--dashboard-port", str(dash_port))
        serve.wait(lambda: serve.ready().get("parts", {}).get("dashboard", {}).get("state")
                   == "failed")
        time.sleep(3)  # a restart would have happened by now
        state = serve.ready()
        dash = state["parts"]["dashboard"]
        assert dash["restarts"] == 0 and "not available" in dash["error"]
        assert state["ready"] is False  # /readyz says so (HTTP 503)
        assert serve.metrics()[("funnelpulse_part_failed", (("part", "dashboard"),))] == 1
        assert serve.stop() == 0
    finally:
        busy.close()
        if serve.proc.poll() is None:
            serve.proc.kill()


def test_sighup_reloads_the_serve_section(tmp_path: Path, days: list[Path], hook: Receiver) -> None:
    config = tmp_path / "funnelpulse.toml"
    config.write_text(f'[serve]\nwatch = ["{tmp_path / "first"}"]\n')
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    serve = Serve(tmp_path, hook.url, watch=False)  # watches what the file says
    try:
        serve.wait(lambda: serve.ready().get("watcher") is not None)
        assert serve.ready()["watcher"]["folders"] == [str(tmp_path / "first")]
        config.write_text(f'[serve]\nwatch = ["{tmp_path / "second"}"]\n')
        serve.proc.send_signal(signal.SIGHUP)
        serve.wait(lambda: serve.ready()["watcher"]["folders"] == [str(tmp_path / "second")])
        publish(days[0], tmp_path / "second")
        serve.idle(1)
        assert "configuration reloaded" in serve.text()
        # a bad file on the next reload is refused; the running configuration stays
        config.write_text("[serve]\nwatch = 3\n")
        serve.proc.send_signal(signal.SIGHUP)
        serve.wait(lambda: "reload refused" in serve.text())
        assert serve.ready()["watcher"]["folders"] == [str(tmp_path / "second")]
        assert serve.stop() == 0
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()


def test_the_systemd_unit_verifies_and_restarts_a_dedicated_user_with_secrets(
    tmp_path: Path,
) -> None:
    unit = (Path(__file__).parents[1] / "deploy" / "systemd" / "funnelpulse.service").read_text()
    for needed in ("Restart=on-failure", "User=funnelpulse", "EnvironmentFile=",
                   "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM"):
        assert needed in unit, needed
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    script = Path(sys.executable).with_name("funnelpulse")
    assert script.exists()  # the unit's ExecStart, pointed at this environment's script
    local = tmp_path / "funnelpulse.service"
    local.write_text(unit.replace("/opt/funnelpulse/venv/bin/funnelpulse", str(script)))
    checked = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr


def test_what_serve_cannot_do_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from funnelpulse.cli import run

    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("FUNNELPULSE_")]:
        monkeypatch.delenv(name)
    wh = str(tmp_path / "wh")
    assert run(["--warehouse", wh, "serve", "--dashboard-port", "0"]) == 1
    assert "Nothing to serve: give --watch FOLDER" in capsys.readouterr().err
    assert run(["--warehouse", wh, "serve", "--watch", "s3://bucket/landing"]) == 1
    assert "a landing location is a local folder or gs://BUCKET/PREFIX" in (
        capsys.readouterr().err)
    (tmp_path / "funnelpulse.toml").write_text('[serve]\nwach = ["land"]\n')
    assert run(["--warehouse", wh, "serve"]) == 1
    assert "Unknown setting 'wach' in [serve]" in capsys.readouterr().err
    (tmp_path / "funnelpulse.toml").write_text('[serve]\nwatch = ["land"]\n')
    monkeypatch.setenv("FUNNELPULSE_SERVE_PORT", "eighty")
    assert run(["--warehouse", wh, "serve"]) == 1
    assert "port from FUNNELPULSE_SERVE_PORT must be a whole number" in capsys.readouterr().err
    monkeypatch.delenv("FUNNELPULSE_SERVE_PORT")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = run(["--warehouse", wh, "serve", "--port", str(port), "--dashboard-port", "0"])
    assert code == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert run(["--warehouse", wh, "serve", "--host", "0.0.0.0"]) == 1
    assert "needs FUNNELPULSE_API_TOKEN" in capsys.readouterr().err


@pytest.mark.kafka
def test_the_live_stream_runs_as_a_supervised_part(
    tmp_path: Path, days: list[Path], hook: Receiver, broker: str
) -> None:
    from funnelpulse.streaming.broker import create_topic

    topic = "serve-live"
    create_topic(broker, topic)
    sent = subprocess.run(
        [sys.executable, "-m", "funnelpulse", "--warehouse", str(tmp_path / "scratch"), "replay",
         "--to", f"kafka://{broker}/{topic}", "--from", str(days[0])],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert sent.returncode == 0, sent.stderr
    events = len(days[0].read_text().splitlines()) - 1
    serve = Serve(tmp_path, hook.url, "--kafka", f"kafka://{broker}/{topic}")
    try:
        serve.wait(lambda: serve.metrics().get(("funnelpulse_stream_events_total", ()))
                   == events)
        assert serve.ready()["parts"]["stream"] == {"state": "up", "restarts": 0, "error": None}
        assert serve.metrics()[("funnelpulse_stream_batches_total", ())] >= 1
        assert "[stream] " in serve.text()  # the stream's lines are in serve's log
        [child] = _children(serve.proc.pid)
        assert serve.stop() == 0
        assert not Path(f"/proc/{child}").exists() or _children(serve.proc.pid) == []
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    live = tables.read(tables.table_path(str(tmp_path / "wh"), "gold_stream_funnel_hourly_brand"))
    assert sum(live.column("views").to_pylist()) > 0


def test_alerts_a_receiver_refused_are_counted_and_delivered_later_once(
    tmp_path: Path, days: list[Path], hook: Receiver
) -> None:
    for day in days:
        publish(day, tmp_path / "land")
    hook.refuse = 10_000  # down: every request answered 503
    serve = Serve(tmp_path, hook.url + "/hook", "--alert", "--sink", "webhook",
                  FUNNELPULSE_SERVE_ALERT_RETRY_S="2")
    try:
        serve.wait(lambda: serve.metrics().get(
            ("funnelpulse_alerts_failed_total", (("sink", "webhook"),)), 0) > 0)
        assert serve.ready()["watcher"]["unfinished_cycle"] is True
        assert hook.log == []
        hook.refuse = 0  # back up
        serve.wait(lambda: serve.ready()["watcher"]["unfinished_cycle"] is False)
        assert hook.log and all(n == 1 for n in keys(hook).values())
        m = serve.metrics()
        assert m[("funnelpulse_alerts_sent_total", (("sink", "webhook"),))] == len(hook.log)
        assert serve.stop() == 0
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()


def test_a_manual_build_while_a_cycle_runs_waits_its_turn(
    tmp_path: Path, days: list[Path], batch: dict[str, list[str]]
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Slow(BaseHTTPRequestHandler):  # a receiver that takes 2 s per alert
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(2)
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    slow = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    for day in days:
        publish(day, tmp_path / "land")
    serve = Serve(tmp_path, f"http://127.0.0.1:{slow.server_address[1]}/hook", "--alert",
                  "--sink", "webhook")
    try:
        serve.wait(lambda: serve.ready().get("watcher", {}).get("cycle_running") is True)
        manual = subprocess.run(
            [sys.executable, "-m", "funnelpulse", "--warehouse", str(tmp_path / "wh"), "build"],
            capture_output=True, text=True, cwd=tmp_path, env=serve.env, timeout=300,
        )
        assert manual.returncode == 0, manual.stderr
        said = " ".join(manual.stderr.split())  # the progress lines wrap at the terminal width
        assert "Waiting for funnelpulse" in said and "to finish writing this warehouse" in said
        assert "Nothing to build" in said  # the cycle's own build came first
        # it went on only once the cycle (alerts included) had let the lock go
        assert serve.ready()["watcher"]["cycle_running"] is False
        serve.idle(1)
        assert serve.stop() == 0
    finally:
        slow.shutdown()
        if serve.proc.poll() is None:
            serve.proc.kill()
    assert snapshot(str(tmp_path / "wh")) == batch


def _replay(tmp_path: Path, broker: str, topic: str, day: Path) -> int:
    sent = subprocess.run(
        [sys.executable, "-m", "funnelpulse", "--warehouse", str(tmp_path / "scratch"), "replay",
         "--to", f"kafka://{broker}/{topic}", "--from", str(day)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert sent.returncode == 0, sent.stderr
    return len(day.read_text().splitlines()) - 1


@pytest.mark.kafka
def test_the_streams_own_consumer_knows_how_many_messages_it_is_behind(
    tmp_path: Path, days: list[Path], broker: str
) -> None:
    from funnelpulse.localdb import connect
    from funnelpulse.streaming.broker import create_topic
    from funnelpulse.streaming.sources import KafkaSource

    topic = "serve-behind"
    create_topic(broker, topic)
    events = _replay(tmp_path, broker, topic, days[0])
    source = KafkaSource(f"kafka://{broker}/{topic}", {}, None, 30.0)
    con = connect()
    try:
        assert sum(source.behind().values()) == events  # nothing read yet: the whole topic
        first = source.read(con, 1000, 10.0, None)
        assert first.messages == 1000
        assert sum(source.behind().values()) == events - 1000
        while sum(source.behind().values()):
            source.read(con, 500_000, 2.0, None)
        assert sum(source.position.values()) == events  # read to the end: 0 behind
        assert set(source.behind()) == set(source.position)
    finally:
        source.close()
        con.close()


@pytest.mark.kafka
def test_stream_lag_is_exported_and_readyz_fails_past_max_lag_s(
    tmp_path: Path, days: list[Path], hook: Receiver, broker: str
) -> None:
    from datetime import UTC, datetime

    from funnelpulse.streaming.broker import create_topic

    topic = "serve-lag"
    create_topic(broker, topic)
    events = _replay(tmp_path, broker, topic, days[0])
    newest = max(line.split(",")[0] for line in days[0].read_text().splitlines()[1:])
    newest_ts = datetime.fromisoformat(newest.replace(" UTC", "")).replace(tzinfo=UTC).timestamp()
    serve = Serve(tmp_path, hook.url, "--kafka", f"kafka://{broker}/{topic}", watch=False,
                  FUNNELPULSE_SERVE_MAX_LAG_S="3")
    try:
        serve.wait(lambda: serve.metrics().get(("funnelpulse_stream_events_total", ()))
                   == events)
        serve.wait(lambda: serve.ready().get("ready") is True)
        m = serve.metrics()
        lags = {k[1]: v for k, v in m.items() if k[0] == "funnelpulse_stream_lag_messages"}
        assert len(lags) == 2 and set(lags.values()) == {0.0}  # two partitions, caught up
        assert m[("funnelpulse_stream_newest_event_timestamp_seconds", ())] == newest_ts
        assert m[("funnelpulse_stream_event_time_lag_seconds", ())] >= time.time() - newest_ts - 5
        assert m[("funnelpulse_stream_lag_seconds", ())] < 3
        # the stream stops moving (frozen, as a hung process): its lag grows past the budget
        [child] = _children(serve.proc.pid)
        os.kill(child, signal.SIGSTOP)
        try:
            serve.wait(lambda: serve.ready().get("ready") is False, 30)
            body = serve.ready()
            assert body["parts"]["stream"]["state"] == "up"  # only the lag says so
            assert "over max_lag_s 3" in body["stream"]["reason"]
            assert body["stream"]["lag_s"] > 3
            assert serve.metrics()[("funnelpulse_stream_lag_seconds", ())] > 3
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{serve.port}/readyz", timeout=10)
            assert refused.value.code == 503
        finally:
            os.kill(child, signal.SIGCONT)
        serve.wait(lambda: serve.ready().get("ready") is True, 30)  # caught up again
        assert "reason" not in serve.ready()["stream"]
        assert serve.stop() == 0
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()


def test_alert_metrics_count_each_sink_on_its_own(
    tmp_path: Path, days: list[Path], hook: Receiver
) -> None:
    for day in days:
        publish(day, tmp_path / "land")
    with receiver() as slack:
        slack.refuse = 10_000  # this one is down; the webhook takes everything
        serve = Serve(tmp_path, hook.url + "/hook", "--alert", "--sink", "webhook", "--sink",
                      "slack", FUNNELPULSE_SLACK_WEBHOOK_URL=slack.url + "/slack",
                      FUNNELPULSE_SERVE_ALERT_RETRY_S="600")
        try:
            serve.wait(lambda: serve.metrics().get(
                ("funnelpulse_alerts_failed_total", (("sink", "slack"),)), 0) > 0)
            serve.wait(lambda: serve.ready()["watcher"]["cycle_running"] is False)
            m = serve.metrics()
            sent = {k[1]: v for k, v in m.items() if k[0] == "funnelpulse_alerts_sent_total"}
            failed = {k[1]: v for k, v in m.items() if k[0] == "funnelpulse_alerts_failed_total"}
            assert set(sent) == set(failed) == {(("sink", "webhook"),), (("sink", "slack"),)}
            assert hook.log and sent[(("sink", "webhook"),)] == len(hook.log)
            assert failed[(("sink", "webhook"),)] == 0
            assert sent[(("sink", "slack"),)] == 0 and slack.log == []
            # each opening the webhook took, the slack sink failed or did not try (a resolution
            # is never sent to a sink that did not get the opening)
            opened = [b for b in hook.bodies() if not b["incident_id"].endswith(":resolved")]
            assert opened and failed[(("sink", "slack"),)] == len(opened)
            assert serve.stop() == 0
        finally:
            if serve.proc.poll() is None:
                serve.proc.kill()


def test_a_landing_folder_without_files_raises_one_no_data_incident_resolved_by_a_file(
    tmp_path: Path, days: list[Path], hook: Receiver
) -> None:
    (tmp_path / "land").mkdir()
    serve = Serve(tmp_path, hook.url + "/hook", "--alert", "--sink", "webhook",
                  FUNNELPULSE_SERVE_NO_FILES_HOURS="0.001")  # 3.6 s

    def no_files() -> list[dict[str, Any]]:
        return [b for b in hook.bodies() if b["incident_id"].startswith("shop:all:no_files:")]

    try:
        serve.wait(lambda: no_files(), 60)
        time.sleep(8)  # more silence, many more looks: still the one incident
        [opened] = no_files()
        assert opened["severity"] == "high" and "no file landed" in opened["message"]
        assert "no file landed for" in serve.text()  # also logged
        publish(days[0], tmp_path / "land")
        serve.wait(lambda: len(no_files()) == 2, 60)
        resolved = no_files()[1]
        assert resolved["incident_id"] == opened["incident_id"] + ":resolved"
        assert "files land again" in resolved["message"]
        assert Counter(keys(hook)).most_common(1)[0][1] == 1  # nothing delivered twice
        assert serve.stop() == 0
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    # the incident is in the alerts table like any other, opened and resolved once each
    alerts = tables.read(tables.table_path(str(tmp_path / "wh"), "alerts")).to_pylist()
    mine = Counter(a["incident_id"] for a in alerts if a["status"] == "sent"
                   and a["incident_id"].startswith("shop:all:no_files:"))
    assert mine == {opened["incident_id"]: 1, resolved["incident_id"]: 1}


@pytest.fixture
def cloud_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A local Cloud Storage emulator with a bucket `land`; serve finds it through
    STORAGE_EMULATOR_HOST, as Google's own clients do."""
    from gcp_storage_emulator.server import create_server
    from pyarrow import fs

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="land")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        yield fs.GcsFileSystem(anonymous=True, endpoint_override=f"127.0.0.1:{port}",
                               scheme="http")
    finally:
        server.stop()


def test_a_gs_prefix_is_watched_through_a_local_mirror(
    tmp_path: Path, days: list[Path], batch: dict[str, list[str]], hook: Receiver,
    cloud_storage: Any,
) -> None:
    def upload(source: Path, name: str) -> None:
        with cloud_storage.open_output_stream(f"land/daily/{name}") as out:
            out.write(source.read_bytes())

    upload(days[0], "events-1.csv")
    upload(days[0], ".events-2.csv.part")  # never read: the landing rule's names
    serve = Serve(tmp_path, hook.url, "--watch", "gs://land/daily", watch=False)
    try:
        serve.idle(1)
        mirror = tmp_path / "wh" / "_funnelpulse" / "serve" / "mirror" / "land" / "daily"
        assert sorted(p.name for p in mirror.iterdir()) == ["events-1.csv"]
        for i, day in enumerate(days[1:], 2):
            upload(day, f"events-{i}.csv")
        serve.idle(2)
        ready = serve.ready()
        assert ready["ready"] is True and ready["watcher"]["folders"] == [str(mirror)]
        m = serve.metrics()
        assert m[("funnelpulse_files_ingested_total", ())] == len(days)
        upload(days[0], "events-1.csv")  # the same bytes again: a new object, nothing to do
        time.sleep(3)
        assert serve.metrics()[("funnelpulse_files_ingested_total", ())] == len(days)
        assert serve.stop() == 0
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    assert snapshot(str(tmp_path / "wh")) == batch  # equal to ingest + build + detect


def test_the_daily_digest_is_sent_once_at_digest_at_kill_9_and_restarts_do_not_resend(
    tmp_path: Path, days: list[Path], hook: Receiver
) -> None:
    """`digest_at` on serve's clock (started at a chosen UTC time by the test hook): the due
    digest at start, the next one at 08:00, none again after kill -9 and a restart, and after a
    day down only the latest missed day's digest."""
    for day in days:
        publish(day, tmp_path / "land")
    build = Serve(tmp_path, hook.url + "/hook")  # the warehouse first, with no digest
    try:
        build.idle(1)
        assert build.stop() == 0
    finally:
        if build.proc.poll() is None:
            build.proc.kill()
    assert hook.log == []
    digest = {"FUNNELPULSE_SERVE_DIGEST_AT": "08:00", "FUNNELPULSE_SERVE_DIGEST_SINKS": "webhook",
              "FUNNELPULSE_SERVE_ALERT_RETRY_S": "0.5"}

    def sent() -> list[str]:
        return [e["body"]["incident_id"] for e in hook.log]

    def logged(serve: Serve, start: str, end: str) -> bool:  # the log scrubs the sink's name
        return any(x.split(": ", 1)[-1].startswith(start) and x.endswith(end)
                   for x in serve.text().splitlines())

    # started a few seconds before 08:00 on 2019-10-08: the digest due since 08:00 the day
    # before (of 2019-10-06) goes at once, 2019-10-07's at 08:00; then kill -9
    first = Serve(tmp_path, hook.url + "/hook", FUNNELPULSE_FAKE_CLOCK="2019-10-08T07:59:55",
                  **digest)
    try:
        first.wait(lambda: len(hook.log) >= 1, 60)
        assert sent() == ["digest:2019-10-06"]
        first.wait(lambda: logged(first, "digest of 2019-10-07 to ", ": sent"), 60)
        first.proc.kill()
        first.proc.wait(timeout=30)
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    assert sent() == ["digest:2019-10-06", "digest:2019-10-07"]
    # restarted the same morning: 2019-10-07's digest is in the journal, not sent again
    again = Serve(tmp_path, hook.url + "/hook", FUNNELPULSE_FAKE_CLOCK="2019-10-08T09:00:00",
                  **digest)
    try:
        again.wait(lambda: logged(again, "digest of 2019-10-07: already sent to ", ""), 60)
        assert again.ready()["parts"]["digest"]["state"] == "up"
        assert again.stop() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()
    assert sent() == ["digest:2019-10-06", "digest:2019-10-07"]
    # down at 08:00 on 2019-10-09, back at noon: the missed digest (of 2019-10-08) goes once
    late = Serve(tmp_path, hook.url + "/hook", FUNNELPULSE_FAKE_CLOCK="2019-10-09T12:00:00",
                 **digest)
    try:
        late.wait(lambda: len(hook.log) >= 3, 60)
        late.wait(lambda: logged(late, "digest of 2019-10-08 to ", ": sent"), 60)
        time.sleep(2)  # ten more polls: nothing more is sent
        assert late.stop() == 0
    finally:
        if late.proc.poll() is None:
            late.proc.kill()
    assert sent() == ["digest:2019-10-06", "digest:2019-10-07", "digest:2019-10-08"]
    assert len(set(keys(hook))) == 3 and set(keys(hook).values()) == {1}
    text = hook.log[2]["body"]["message"]
    assert text.startswith("FunnelPulse daily digest for 2019-10-08 (UTC), against 2019-10-01")
    assert "- resolved shop:all/" in text  # the checkout break, over that day
