"""Soak of `funnelpulse serve`: daily files landing one at a time, at an accelerated pace, with a
kill -9 every ten days.

Generates `--days` days of plain events (explicit shape, pinned seed) with a checkout break
(purchases stop for 8 hours) on days 15, 35, 55 (every `--break-every` days from day 15), splits them into one file per day,
and publishes them one at a time (written as `.part`, renamed) into the landing folder of a real
`funnelpulse serve --alert --sink webhook` process posting to a local HTTP receiver. After each
file it waits for the file's cycle and records the cycle's own duration, the process's RSS and
open file descriptors. Every `--kill-every` days, 0.5 s after the file lands (inside its cycle),
the process is killed with SIGKILL and started again. For each break day, the time from the file
landing to the receiver getting the break's alert is recorded.

At the end: bronze must hold every event once, every alert key must be received once, and the
cycle time, RSS and fds of the last days are compared with those of day 10.

Usage: python benchmarks/bench_serve.py [--days 60] [--rows-per-day 3000] [--kill-every 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hook:
    """A webhook receiver recording (arrival time, body, key)."""

    def __init__(self) -> None:
        self.log: list[tuple[float, dict[str, Any], str]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.log.append((time.time(), body, self.headers.get("Idempotency-Key", "")))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def get(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            body = reply.read().decode()
    except OSError:
        return None
    return body if path == "/metrics" else json.loads(body)


def ok_cycles(port: int) -> int:
    text = get(port, "/metrics") or ""
    for line in text.splitlines():
        if line.startswith('funnelpulse_cycles_total{result="ok"}'):
            return int(float(line.split()[-1]))
    return -1


def proc_figures(pid: int) -> tuple[float, int]:
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--rows-per-day", type=int, default=3000)
    ap.add_argument("--kill-every", type=int, default=10)
    ap.add_argument("--break-every", type=int, default=20)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    first = date(2019, 10, 1)
    # break days off the kill days (15, 35, 55): the landing-to-alert time of a normal cycle
    breaks = [first + timedelta(d - 1) for d in range(15, args.days + 1, args.break_every)]
    labels = [
        {"id": f"break-{d}", "kind": "checkout_broken", "dimension": "shop", "segment": "all",
         "step": "purchase", "start": f"{d}T08:00:00+00:00", "hours": 8, "factor": 0.0}
        for d in breaks
    ]
    (root / "labels.json").write_text(json.dumps(labels))
    events = root / "events.csv"
    subprocess.run(
        [sys.executable, "-m", "funnelpulse", "-q", "generate", "--shape", "plain", "--rows",
         str(args.rows_per_day * args.days), "--days", str(args.days), "--brands", "10",
         "--seed", "5", "--out", str(events), "--inject", str(root / "labels.json")],
        check=True,
    )
    lines = events.read_text().splitlines()
    by_day: dict[str, list[str]] = {}
    for line in lines[1:]:
        by_day.setdefault(line[:10], []).append(line)
    staged = root / "days"
    staged.mkdir()
    for day, rows in sorted(by_day.items()):
        (staged / f"events-{day}.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    total_rows = len(lines) - 1
    hook = Hook()
    port = free_port()
    land = root / "land"
    land.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELPULSE_")}
    env.update(FUNNELPULSE_SETTLE_S="0.2", FUNNELPULSE_SERVE_POLL_S="0.2",
               FUNNELPULSE_WEBHOOK_URL=hook.url)
    command = [sys.executable, "-m", "funnelpulse", "--warehouse", str(root / "wh"), "serve",
               "--watch", str(land), "--port", str(port), "--dashboard-port", "0", "--alert",
               "--sink", "webhook"]
    log = open(root / "serve.log", "w")  # noqa: SIM115 (open for the whole run)

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        while get(port, "/healthz") is None:
            time.sleep(0.1)
        return proc

    proc = start()
    cycles = 0
    rows: list[tuple[int, float, float, int]] = []
    landed_at: dict[str, float] = {}
    kills = 0
    for n, path in enumerate(sorted(staged.iterdir()), start=1):
        part = land / (path.name + ".part")
        shutil.copyfile(path, part)
        os.replace(part, land / path.name)
        landed_at[path.name[7:17]] = time.time()
        if n % args.kill_every == 0:
            time.sleep(0.5)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = start()
            # the new process counts its own cycles: wait for the day's work to be done (a
            # cycle, or 5 s idle when the killed process had finished it)
            began = time.time()
            while True:
                watch = (get(port, "/readyz") or {}).get("watcher", {})
                idle = not watch.get("unfinished_cycle") and watch.get("waiting_files") == 0
                if idle and (ok_cycles(port) >= 1 or time.time() - began > 5):
                    break
                time.sleep(0.2)
            cycles = ok_cycles(port)
        else:
            while ok_cycles(port) < cycles + 1:
                time.sleep(0.1)
            cycles += 1
        last = get(port, "/readyz")["watcher"]["last_cycle"]
        rss, fds = proc_figures(proc.pid)
        rows.append((n, last["seconds"] if last else float("nan"), rss, fds))
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    log.close()

    import pyarrow.dataset as ds  # noqa: F401 (the tables library reads through pyarrow)

    sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
    from funnelpulse import tables

    bronze = tables.read(tables.table_path(str(root / "wh"), tables.BRONZE)).num_rows
    keys = Counter(k for _, _, k in hook.log)
    openings = [(t, b) for t, b, _ in hook.log if not b["incident_id"].endswith(":resolved")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.days} days x "
          f"{args.rows_per_day} events; kill -9 every {args.kill_every} days ({kills} kills)")
    print(f"SIGTERM exit code: {code}; bronze rows {bronze} of {total_rows}; alert keys "
          f"{len(keys)}, sent more than once: {sum(1 for v in keys.values() if v > 1)}")
    print("day  cycle_s  rss_mb  fds")
    for n, seconds, rss, fds in rows:
        if n in (1, 2, 5) or n % 10 == 0 or n == len(rows):
            print(f"{n:3d}  {seconds:7.2f}  {rss:6.0f}  {fds:3d}")
    base = rows[10] if len(rows) > 10 else rows[0]  # day 11: day 10's cycle ran across a kill
    late = [r for r in rows[-10:] if r[1] == r[1]]
    print(
        f"last 10 days vs day {base[0]}: cycle x{statistics.median(r[1] for r in late) / base[1]:.2f}"
        f" (median), RSS x{max(r[2] for r in late) / base[2]:.2f} (max), "
        f"fds x{max(r[3] for r in late) / base[3]:.2f} (max)"
    )
    for day in breaks:
        found = [t for t, b in openings if b["root"] == "shop:all" and b["kind"] == "drop"
                 and b["start"][:10] in (str(day), str(day - timedelta(1)))]
        lag = f"{found[0] - landed_at[str(day)]:.1f} s" if found else "not alerted"
        print(f"break on {day}: file landed -> alert received {lag}")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
