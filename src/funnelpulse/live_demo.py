"""`funnelpulse demo --live`: the live path in about two minutes, on this machine alone.

Five days of generated history are built into a warehouse; the bundled broker starts; the stream
runs with live alerts (file sink); the sixth day, whose checkout is broken from 12:00 to 13:00
UTC, is replayed at the pace that fits the day into the asked seconds. The break is alerted
while it happens in event time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .console import Progress, SilentProgress
from .errors import FunnelPulseError, Interrupted

START = datetime(2024, 3, 1, tzinfo=UTC)
HISTORY_DAYS = 5
DAY = START + timedelta(days=HISTORY_DAYS)
BREAK = DAY + timedelta(hours=12)  # the whole shop's checkout is broken 12:00-13:00 UTC
TOPIC = "funnelpulse-live-demo"


@dataclass
class LiveDemo:
    warehouse: str
    alert_file: Path
    published: int = 0
    consumed: int = 0
    alerts: list[dict[str, object]] = field(default_factory=list)

    @property
    def break_alerted(self) -> bool:
        """A whole-shop drop incident opened in the broken hour (or in the minutes before it,
        when the open window saw it coming)."""
        hours = {f"{BREAK - timedelta(hours=1):%Y%m%dT%H}", f"{BREAK:%Y%m%dT%H}"}
        return any(
            re.fullmatch(r"shop:all/[a-z_]+-drop/(\d{8}T\d{2})", str(a.get("incident_id", "")))
            and str(a["incident_id"])[-11:] in hours
            for a in self.alerts
        )


def prepare(folder: Path, events_per_day: int, progress: Progress) -> tuple[str, Path]:
    """History built into FOLDER/warehouse and the live day as a CSV file (made once, reused)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .generate import Incident, generate_events, write_events
    from .pipeline import Pipeline

    warehouse = folder / "warehouse"
    day_file = folder / f"day-{events_per_day}.csv"
    done = folder / f".prepared-{events_per_day}"
    if done.exists() and day_file.exists():
        return str(warehouse), day_file
    folder.mkdir(parents=True, exist_ok=True)
    progress.step(f"Generating {HISTORY_DAYS} days of history and the live day")
    broken = Incident("checkout", "drop", "shop", "all", "purchase", BREAK, 1, 0.0)
    events = generate_events(
        (HISTORY_DAYS + 1) * events_per_day,
        seed=21,
        start=START,
        days=HISTORY_DAYS + 1,
        brands=40,
        incidents=[broken],
    )
    cut = pa.scalar(DAY, pa.timestamp("us", "UTC"))
    history = write_events(
        events.filter(pc.less(events["event_time"], cut)), folder / "history.csv"
    )
    write_events(events.filter(pc.greater_equal(events["event_time"], cut)), day_file)
    progress.step("Building the history")
    pipeline = Pipeline(warehouse=str(warehouse))
    pipeline.ingest([history])
    pipeline.build()
    done.write_text("ok\n")
    return str(warehouse), day_file


def _alerts(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(
    folder: Path,
    seconds: float = 120.0,
    events_per_day: int = 40_000,
    progress: Progress | None = None,
    on_ready: object = None,
) -> LiveDemo:
    """Prepare, start the broker and the stream, replay the day; stop everything at the end or
    on Ctrl-C (raised as Interrupted with what was published and consumed)."""
    from .streaming.broker import create_topic, free_port, start_broker, stop_broker
    from .streaming.replay import replay

    progress = progress or SilentProgress()
    warehouse, day_file = prepare(folder, events_per_day, progress)
    alert_file = folder / "alerts.jsonl"
    alert_file.unlink(missing_ok=True)
    demo = LiveDemo(warehouse, alert_file)
    progress.step("Starting the bundled Kafka-protocol broker")
    port = free_port()
    broker = start_broker(port)
    stream: subprocess.Popen[str] | None = None
    out_path = folder / "stream.out"
    try:
        create_topic(f"127.0.0.1:{port}", TOPIC, 1)
        url = f"kafka://127.0.0.1:{port}/{TOPIC}"
        env = {
            **os.environ,
            "FUNNELPULSE_ALERT_FILE": str(alert_file),
            "FUNNELPULSE_MIN_SEVERITY": "low",
        }
        with open(out_path, "w") as out:
            stream = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "funnelpulse",
                    "--quiet",
                    "--warehouse",
                    warehouse,
                    "stream",
                    "--source",
                    url,
                    "--alert",
                    "--sink",
                    "file",
                    "--until-idle",
                    "15",
                    "--broker-timeout-s",  # a busy machine: the broker may answer slowly
                    "300",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
        if callable(on_ready):
            on_ready(demo)
        speedup = (24 * 3600) / seconds
        try:
            result = replay(warehouse, url, [str(day_file)], speedup, progress)
        except Interrupted as exc:
            demo.published = _number(str(exc), r"published ([\d,]+)")
            raise
        demo.published = result.published
        progress.step("Waiting for the stream to take the last events")
        stream.wait(timeout=max(120.0, seconds))
    except (Interrupted, KeyboardInterrupt) as exc:
        demo.consumed = _stop(stream, out_path)
        demo.alerts = _alerts(alert_file)
        raise Interrupted(
            f"published {demo.published:,} events, the stream consumed {demo.consumed:,}; "
            f"{len(demo.alerts)} alert(s) in {alert_file}. Everything is stopped"
        ) from (None if isinstance(exc, KeyboardInterrupt) else exc)
    finally:
        if stream is not None and stream.poll() is None:
            _stop(stream, out_path)
        stop_broker(broker)
    text = out_path.read_text()
    if stream.returncode != 0:
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise FunnelPulseError(
            f"The live stream stopped with an error ({last.removeprefix('Error: ')}). Its log "
            f"is {out_path}; run `funnelpulse demo --live` again"
        )
    demo.consumed = _number(text, r"([\d,]+) events in")
    demo.alerts = _alerts(alert_file)
    return demo


def _number(text: str, pattern: str) -> int:
    found = re.findall(pattern, text)
    return int(found[-1].replace(",", "")) if found else 0


def _stop(stream: subprocess.Popen[str] | None, out_path: Path) -> int:
    """Stop the stream as Ctrl-C would (it commits what it took), and read how many it took."""
    if stream is None:
        return 0
    try:  # a Ctrl-C in the terminal reached it too: let it finish its own clean stop
        stream.wait(timeout=3)
    except subprocess.TimeoutExpired:
        stream.send_signal(signal.SIGINT)  # only this process was interrupted: pass it on
        try:
            stream.wait(timeout=5)  # within the command's Ctrl-C grace
        except subprocess.TimeoutExpired:
            stream.kill()
            stream.wait()
    return _number(out_path.read_text() if out_path.exists() else "", r"([\d,]+) events in")
