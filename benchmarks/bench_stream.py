"""Streaming benchmark with the real tansu broker, for both stream engines.

Usage: python benchmarks/bench_stream.py [--only drain|sustained|soak] [--events 1000000]
       [--drain-runs 3] [--baseline-src OTHER/src] [--rate 50000] [--seconds 60] [--soak-batches 20000] [--spark]

1. drain: fill a topic with --events generated events (`funnelpulse replay`), then time
   - a bare confluent-kafka consumer that only counts the messages (the ceiling),
   - `funnelpulse stream` (embedded engine) draining the topic into the live table,
   - with --spark, `funnelpulse stream --engine spark` draining the same topic.
   Events/s are counted from the first to the last batch in the stream's log; peak RSS from wait4.
   The whole command as a user times it: `funnelpulse stream --until-idle S` from spawn to exit,
   less S. The stream stops at the first idle check at least S after its last batch returned
   (after the batch's commit, maintenance and log line), so S is the wait the user asked for;
   what it waits beyond S (the idle check's granularity) and the shut-down stay in the figure.
   `--drain-runs N` alternates N bare consumers and N whole commands (medians; ratio of medians)
   and prints where the whole command's seconds went, from its log's timestamps; with
   `--baseline-src`, another tree's whole command too, before or after this tree's in turn.
2. sustained: with the embedded stream running, offer --rate events/s for --seconds (event time =
   now) plus one probe per second (a brand of its own); latency = send call -> the probe's window
   visible in the live table. Checks nothing was lost: events in = events delivered, and the live
   table's views = the distinct view events sent. Reports the dedup state's size.
3. soak: --soak-batches micro-batches of 100 events with stream_retention_s = --soak-retention-s
   (60: maintenance reaches its steady state within minutes); every --soak-every batches, the
   read time, file counts and log size of the live table and of the 5-minute buckets, and the
   stream's RSS (the table in BENCHMARKS.md: after 1,000 batches, in the middle and at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from funnelpulse import generate_events, tables, write_events
from funnelpulse.streaming.broker import create_topic, local_broker

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
EMBEDDED_BATCH = re.compile(r"batch (\d+): ([\d,]+) events")
SPARK_BATCH = re.compile(r"funnelpulse_windows batch (\d+): ([\d,]+) rows in ([\d.]+) s")


def fp(*args: str) -> list[str]:
    return [sys.executable, "-m", "funnelpulse", *args]


class PeakRss:
    """A child's own peak RSS (VmHWM, sampled every 0.1 s until it exits). Not wait4's ru_maxrss:
    exec keeps the peak of the address space it replaces, so a child started by this (large)
    benchmark process would report this process's memory at the time it was started."""

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.mb = 0.0
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while True:
            try:
                text = self.path.read_text()
            except OSError:
                return
            if "VmHWM:" not in text:  # exited (a zombie has no memory left)
                return
            self.mb = max(self.mb, int(text.split("VmHWM:")[1].split()[0]) / 1024)
            time.sleep(0.1)

    def done(self) -> float:
        self.thread.join(timeout=5)
        return self.mb


def self_rss_mb() -> float:
    """This benchmark process's own RSS now (the producer's data lives here)."""
    text = Path("/proc/self/status").read_text()
    return int(text.split("VmRSS:")[1].split()[0]) / 1024


def stamp_s(line: str) -> float | None:
    """The wall-clock time of a log line (its asctime, millisecond precision), or None."""
    s = STAMP.match(line)
    return datetime.strptime(s.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if s else None


def run_measured(
    cmd: list[str], timeout: float = 3600, env: dict[str, str] | None = None
) -> tuple[str, list[str], float, float]:
    """Run `cmd`; its stdout, stderr lines (with arrival times), wall seconds and own peak RSS (MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = PeakRss(proc.pid)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(
        target=lambda: lines.extend(
            (time.perf_counter(), text) for text in iter(proc.stderr.readline, "")
        ),  # type: ignore[union-attr]  # noqa: E741
        daemon=True,
    )
    reader.start()
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    reader.join(timeout=10)
    if status != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{''.join(text for _, text in lines)[-3000:]}")
    return out, [text for _, text in lines], time.perf_counter() - started, peak.done()


def span_s(
    lines: list[str], pattern: re.Pattern[str], first_took: float = 0.0
) -> tuple[int, float]:
    """Events and seconds from the start of the first data batch to the end of the last one."""
    stamps = []
    total = 0
    for line in lines:
        m = pattern.search(line)
        s = STAMP.match(line)
        if m and s and int(m.group(2).replace(",", "")):
            total += int(m.group(2).replace(",", ""))
            stamps.append(datetime.strptime(s.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    if not stamps:
        return 0, 0.0
    took = re.search(r"total ([\d.]+) s", next(line for line in lines if pattern.search(line)))
    first = float(took.group(1)) if took else first_took
    return total, stamps[-1] - stamps[0] + first


def bare_consumer(bootstrap: str, topic: str, expected: int) -> float:
    """Seconds for a plain confluent-kafka consumer to count `expected` messages."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-bare",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    count = 0
    started = time.perf_counter()
    deadline = started + 600
    while count < expected and time.perf_counter() < deadline:
        count += sum(1 for m in consumer.consume(num_messages=50_000, timeout=0.5) if not m.error())
    took = time.perf_counter() - started
    consumer.close()
    if count != expected:
        raise SystemExit(f"bare consumer counted {count:,} of {expected:,}")
    return took


IDLE_S = 3.0  # the drain's --until-idle


def whole_command(
    url: str, warehouse: Path, trigger_s: float | None, src: str | None = None
) -> tuple[float, dict[str, float], str, list[str], float]:
    """Run `funnelpulse stream --source url --until-idle IDLE_S` once, as a user would: its wall
    seconds from spawn to exit less IDLE_S, where they went (from the log's timestamps against
    the wall clock at spawn and exit), its stdout and log lines, and its peak RSS."""
    spawned = time.time()
    out, lines, wall, rss = run_measured(
        fp(
            "--warehouse",
            str(warehouse),
            "stream",
            "--source",
            url,
            "--until-idle",
            str(IDLE_S),
            *(["--trigger-s", str(trigger_s)] if trigger_s else []),
        ),
        env=dict(os.environ, PYTHONPATH=src) if src else None,
    )
    exited = spawned + wall
    batches = [line for line in lines if EMBEDDED_BATCH.search(line)]
    data = [line for line in batches if int(EMBEDDED_BATCH.search(line).group(2).replace(",", ""))]  # type: ignore[union-attr]
    first_log = next(t for t in map(stamp_s, lines) if t is not None)
    ready = next(stamp_s(line) for line in lines if "messages to catch up" in line)
    took = re.search(r"total ([\d.]+) s", data[0])
    first_start = stamp_s(data[0]) - (float(took.group(1)) if took else 0.0)  # type: ignore[operator]
    last_end = stamp_s(data[-1])
    stopped = next(stamp_s(line) for line in lines if "stopped after batch" in line)
    parts = {
        "spawn -> first log line (imports, settings, lock)": first_log - spawned,
        "first log line -> source ready (state, live table, broker metadata, true ends)": ready
        - first_log,
        "source ready -> first batch starts": first_start - ready,  # type: ignore[operator]
        "first -> last batch": last_end - first_start,  # type: ignore[operator]
        f"last batch -> stop (the {IDLE_S:g} s idle + its granularity)": stopped - last_end,  # type: ignore[operator]
        "stop -> exit (state size, close, windows count, print, interpreter exit)": exited
        - stopped,  # type: ignore[operator]
    }
    return wall - IDLE_S, parts, out, lines, rss


def drain(
    bootstrap: str,
    folder: Path,
    events: int,
    spark: bool,
    trigger_s: float | None,
    runs: int = 1,
    baseline_src: str | None = None,
) -> None:
    topic = "bench-drain"
    create_topic(bootstrap, topic)
    source = write_events(generate_events(events, seed=1, days=30, brands=250), folder / "e.csv")
    out, _, wall, _ = run_measured(
        fp("replay", "--to", f"kafka://{bootstrap}/{topic}", "--from", str(source))
    )
    print(f"replay (batched, lz4): {out.strip()}")
    url = f"kafka://{bootstrap}/{topic}"
    bares: list[float] = []
    wholes: list[float] = []
    spans: list[float] = []
    baselines: list[float] = []
    for run in range(runs):
        print(f"load average before run {run + 1}: {os.getloadavg()[0]:.2f}", flush=True)
        bare = bare_consumer(bootstrap, topic, events)
        bares.append(bare)
        print(
            f"bare confluent-kafka consumer, counting only: {events:,} in {bare:.2f} s = "
            f"{events / bare:,.0f}/s",
            flush=True,
        )

        def baseline(run: int = run, bare: float = bare) -> None:
            base, parts, _, _, _ = whole_command(
                url, folder / f"wh-baseline-{run}", trigger_s, str(Path(baseline_src).resolve())
            )
            baselines.append(base)
            print(
                f"baseline tree ({baseline_src}): whole command {base:.2f} s less the idle "
                f"(ratio {base / bare:.2f}x)",
                flush=True,
            )
            for name, seconds in parts.items():
                print(f"    {seconds:6.2f} s  {name}")

        if baseline_src and run % 2:  # every other run first, so neither gains from its turn
            baseline()
        whole, parts, out, lines, rss = whole_command(url, folder / f"wh-embedded-{run}", trigger_s)
        wholes.append(whole)
        total, took = span_s(lines, EMBEDDED_BATCH)
        spans.append(took)
        if total != events:
            raise SystemExit(f"the stream counted {total:,} events of {events:,}")
        batches = sum(1 for line in lines if EMBEDDED_BATCH.search(line))
        print(
            f"embedded stream: {total:,} events in {batches} batches, {took:.2f} s first to last "
            f"batch = {total / took:,.0f}/s (ratio {took / bare:.2f}x the bare consumer); whole "
            f"command {whole:.2f} s spawn to exit less the {IDLE_S:g} s idle (ratio "
            f"{whole / bare:.2f}x); peak RSS {rss:,.0f} MB",
            flush=True,
        )
        for name, seconds in parts.items():
            print(f"    {seconds:6.2f} s  {name}")
        print(f"  {out.strip()}")
        for line in lines:
            if EMBEDDED_BATCH.search(line):
                print(f"  {line.strip()}")
        if baseline_src and not run % 2:
            baseline()
    bare, whole, took = (statistics.median(v) for v in (bares, wholes, spans))
    print(
        f"medians of {runs}: bare consumer {bare:.2f} s, first to last batch {took:.2f} s "
        f"({took / bare:.2f}x), whole command less idle {whole:.2f} s (**{whole / bare:.2f}x**)"
        + (
            f", baseline tree's whole command {statistics.median(baselines):.2f} s "
            f"({statistics.median(baselines) / bare:.2f}x)"
            if baselines
            else ""
        )
        + f"; load average now {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if spark:
        out, lines, wall, rss = run_measured(
            fp(
                "--warehouse",
                str(folder / "wh-spark"),
                "stream",
                "--engine",
                "spark",
                "--source",
                url,
                "--until-idle",
                "8",
                "--trigger-s",
                "1",
                "--master",
                "local[2]",
            )
        )
        busy = [
            (int(m.group(2).replace(",", "")), float(m.group(3)))
            for m in map(SPARK_BATCH.search, lines)
            if m
        ]
        total, took = span_s(lines, SPARK_BATCH, first_took=next((t for n, t in busy if n), 0.0))
        print(
            f"spark stream: {total:,} events, {took:.1f} s first to last batch = "
            f"{total / max(took, 1e-9):,.0f}/s; peak RSS of the driver process {rss:,.0f} MB "
            f"(the JVM is a child: see note); wall {wall:.1f} s"
        )
        print(f"  {out.strip()}")


def _percentiles(delays: list[float]) -> str:
    if not delays:
        return "none seen"
    delays = sorted(delays)
    p95 = delays[max(0, int(round(0.95 * len(delays))) - 1)]
    return f"p50 {statistics.median(delays):.2f} s, p95 {p95:.2f} s, max {delays[-1]:.2f} s"


def sustained(
    bootstrap: str, folder: Path, rate: float, seconds: float, trigger_s: float | None
) -> None:
    from confluent_kafka import Producer

    from funnelpulse.streaming.kafka_client import producer_config

    topic = "bench-sustained"
    create_topic(bootstrap, topic)
    warehouse = folder / "wh-sustained"
    total = int(rate * seconds)
    table = generate_events(total, seed=2, days=1, brands=250)
    templates = []
    for row in table.to_pylist():
        row["event_time"] = "@@TS@@"
        templates.append((json.dumps(row).encode(), row["user_session"].encode(), row))
    proc = subprocess.Popen(
        fp(
            "--warehouse",
            str(warehouse),
            "stream",
            "--source",
            f"kafka://{bootstrap}/{topic}",
            *(["--trigger-s", str(trigger_s)] if trigger_s else []),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = PeakRss(proc.pid)
    bench_rss = self_rss_mb()
    lines: list[str] = []
    threading.Thread(
        target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True
    ).start()  # type: ignore[union-attr]
    while not any("messages to catch up" in line for line in lines):
        time.sleep(0.2)
    sent: dict[str, float] = {}
    views: set[tuple[Any, ...]] = set()
    delivered = [0]
    failed = [0]

    def report(err: Any, _msg: Any) -> None:
        if err is None:
            delivered[0] += 1
        else:
            failed[0] += 1

    def produce() -> None:
        producer = Producer(producer_config(bootstrap))
        start = time.perf_counter()
        tick = 0.01
        for i, (value, key, row) in enumerate(templates):
            if i % int(rate * tick) == 0:
                wait = start + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                if (i // int(rate * tick)) % int(1 / tick) == 0:  # one probe a second
                    name = f"probe{len(sent)}"
                    probe = dict(row, event_time=stamp, brand=name, event_type="view", price=1.0)
                    probe["user_session"] = f"probe-session-{name}"
                    sent[name] = time.time()
                    producer.produce(topic, json.dumps(probe).encode(), on_delivery=report)
                    views.add((stamp, probe["user_id"], probe["user_session"], probe["product_id"]))
            while True:
                try:
                    producer.produce(
                        topic, value.replace(b"@@TS@@", stamp.encode()), key, on_delivery=report
                    )
                    break
                except BufferError:
                    producer.poll(0.01)
            if row["event_type"] == "view" and row["price"] and row["price"] > 0:
                views.add((stamp, row["user_id"], row["user_session"], row["product_id"]))
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(120)
        took = time.perf_counter() - start
        print(
            f"offered {len(templates) + len(sent):,} events in {took:.1f} s ({(len(templates) + len(sent)) / took:,.0f}/s): "
            f"{delivered[0]:,} delivered, {failed[0]:,} failed"
        )

    thread = threading.Thread(target=produce)
    thread.start()
    seen: dict[str, float] = {}
    live = tables.table_path(str(warehouse), tables.GOLD_STREAM)
    while thread.is_alive() or len(seen) < len(sent):
        if not thread.is_alive() and time.time() - max(sent.values(), default=time.time()) > 30:
            break
        try:
            brands = set(tables.read(live).column("brand").to_pylist())
        except Exception:
            brands = set()
        now = time.time()
        for name in list(sent):
            if name not in seen and name in brands:
                seen[name] = now
        time.sleep(0.1)
    thread.join()
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, _, usage = os.wait4(proc.pid, 0)
    print(
        f"stream peak RSS {peak.done():,.0f} MB (its own VmHWM); wait4's ru_maxrss "
        f"{usage.ru_maxrss / 1024:,.0f} MB counts this benchmark process, {bench_rss:,.0f} MB "
        "when it started the stream (the producer's events)"
    )
    rows = tables.read(live).to_pylist()
    counted_views = sum(r["views"] for r in rows)
    print(f"stream: {out.strip()}")
    print(
        f"latency send -> visible in the live table, {len(seen)} of {len(sent)} probes: "
        f"{_percentiles([seen[n] - sent[n] for n in seen])}"
    )
    print(
        f"views in the live table {counted_views:,}; distinct view events sent {len(views):,}; "
        f"{'nothing lost' if counted_views == len(views) else 'MISMATCH'}"
    )
    state = [line for line in lines if "dedup state" in line]
    print(f"  {state[-1].strip() if state else 'no state line'}")
    batches = [line for line in lines if EMBEDDED_BATCH.search(line)]
    print(f"  {len(batches)} batches; last: {batches[-1].strip() if batches else '-'}")


def _disk(table: Path) -> tuple[int, int, float]:
    """Parquet files on disk, log files and log MB of one Delta table (0s when absent)."""
    if not (table / "_delta_log").is_dir():
        return 0, 0, 0.0
    log_files = list((table / "_delta_log").iterdir())
    on_disk = sum(1 for _ in table.rglob("*.parquet")) - sum(
        1 for f in log_files if f.name.endswith(".parquet")
    )
    return on_disk, len(log_files), sum(f.stat().st_size for f in log_files) / 1e6


def _read_vs_copy(table: Path, copy: Path) -> tuple[float, float, int]:
    """Best-of-5 read of `table` and of a one-commit copy of its rows (same partitioning): what
    the table's history costs a reader, apart from how much data it holds."""
    from deltalake import DeltaTable, write_deltalake

    def best(path: Path) -> float:
        times = []
        for _ in range(5):
            clock = time.perf_counter()
            tables.read(str(path))
            times.append((time.perf_counter() - clock) * 1000)
        return min(times)

    data = tables.read(str(table))
    shutil.rmtree(copy, ignore_errors=True)
    write_deltalake(
        str(copy), data, partition_by=DeltaTable(str(table)).metadata().partition_columns
    )
    return best(table), best(copy), data.num_rows


def soak(
    bootstrap: str, folder: Path, batches: int, retention_s: int, every: int, days: int | None
) -> None:
    """Many small batches: do reads, files, log and memory stay flat as the stream runs for long?"""
    from deltalake import DeltaTable

    from funnelpulse.streaming.replay import publish

    topic = "bench-soak"
    create_topic(bootstrap, topic)
    per_batch = 100
    days = days or max(2, batches // 500)
    table = generate_events(batches * per_batch, seed=4, days=days, brands=50)
    rows = table.to_pylist()
    msgs = []
    for row in rows:
        row["event_time"] = row["event_time"].strftime("%Y-%m-%d %H:%M:%S UTC")
        msgs.append((json.dumps(row), row["user_session"], 0.0))
    del rows, table
    publish(f"kafka://{bootstrap}/{topic}", iter(msgs))
    del msgs
    warehouse = folder / "wh-soak"
    live = Path(tables.table_path(str(warehouse), tables.GOLD_STREAM))
    buckets = Path(tables.table_path(str(warehouse), tables.GOLD_STREAM_BUCKETS))
    env = dict(os.environ, FUNNELPULSE_STREAM_RETENTION_S=str(retention_s))
    proc = subprocess.Popen(
        fp(
            "--warehouse",
            str(warehouse),
            "stream",
            "--source",
            f"kafka://{bootstrap}/{topic}",
            "--max-rows-per-batch",
            str(per_batch),
            "--until-idle",
            "3",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    marks = sorted({*range(every, batches, every), 1000, batches // 2, batches - 1})
    print(
        f"{batches:,} batches of {per_batch} events over {days} days of event time, "
        f"stream_retention_s={retention_s}; "
        "live table (gold_stream_funnel_hourly_brand) and 5-minute buckets (gold_stream_funnel_buckets)",
        flush=True,
    )
    print(
        "batch  elapsed_s  batches/s  read_ms  files_in_table  parquet_on_disk  log_files  log_MB"
        "  | 5min: read_ms  files  on_disk  log_files  log_MB | rss_MB",
        flush=True,
    )
    started = time.perf_counter()
    last = (0, started)
    copies: list[str] = []
    while marks and proc.poll() is None:
        try:
            version = DeltaTable(str(live)).transaction_version("funnelpulse-embedded-windows") or 0
        except Exception:
            version = 0
        if version >= marks[0]:
            while marks and version >= marks[0]:
                marks.pop(0)
            now = time.perf_counter()
            rate = (version - last[0]) / (now - last[1])
            last = (version, now)
            figures = []
            for path in (live, buckets):
                read_ms, copy_ms, rows = _read_vs_copy(path, folder / f"copy-{path.name}")
                active = len(DeltaTable(str(path)).file_uris())
                figures.append((read_ms, active, *_disk(path)))
                copies.append(f"{path.name} {rows:,} rows: {read_ms:.1f} ms, copy {copy_ms:.1f} ms")
            rss = (
                int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])
                / 1024
            )
            (r1, a1, d1, l1, m1), (r2, a2, d2, l2, m2) = figures
            print(
                f"{version:>6}  {now - started:9.0f}  {rate:9.2f}  {r1:7.1f}  {a1:14d}  {d1:15d}"
                f"  {l1:9d}  {m1:6.2f}  | {r2:13.1f}  {a2:5d}  {d2:7d}  {l2:9d}  {m2:6.2f} | {rss:6.0f}",
                flush=True,
            )
        time.sleep(0.5)
    out, _ = proc.communicate(timeout=7200)
    print(out.strip(), flush=True)
    print("read (best of 5) against a copy of the same rows written in one commit:")
    print("\n".join(copies), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=50_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--trigger-s", type=float, default=None, help="the stream's --trigger-s (default: its own)"
    )
    parser.add_argument("--soak-batches", type=int, default=20_000)
    parser.add_argument(
        "--soak-retention-s", type=int, default=60, help="the stream's stream_retention_s"
    )
    parser.add_argument("--soak-every", type=int, default=1000, help="sample every N batches")
    parser.add_argument(
        "--soak-days",
        type=int,
        default=None,
        help="days of event time the soak's events span (default: batches / 500, at least 2)",
    )
    parser.add_argument("--spark", action="store_true", help="also drain with --engine spark")
    parser.add_argument(
        "--drain-runs", type=int, default=1, help="bare consumer + whole command pairs (medians)"
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="drain: also time the whole command with another tree's src/ in each run",
    )
    parser.add_argument("--data-dir", default="benchmarks/data/stream")
    parser.add_argument("--only", choices=["drain", "sustained", "soak"], default=None)
    args = parser.parse_args()
    folder = Path(args.data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with local_broker() as bootstrap:
        if args.only in (None, "drain"):
            drain(
                bootstrap,
                folder,
                args.events,
                args.spark,
                args.trigger_s,
                args.drain_runs,
                args.baseline_src,
            )
        if args.only in (None, "sustained"):
            sustained(bootstrap, folder, args.rate, args.seconds, args.trigger_s)
        if args.only in (None, "soak"):
            soak(
                bootstrap,
                folder,
                args.soak_batches,
                args.soak_retention_s,
                args.soak_every,
                args.soak_days,
            )


if __name__ == "__main__":
    main()
