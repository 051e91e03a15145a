"""Streaming benchmark with the real tansu broker: throughput into the live table, and latency.

Usage: python benchmarks/bench_stream.py [--events 200000] [--rate 2000] [--seconds 60]

1. Throughput: publish --events generated events while `funnelpulse stream` consumes the topic,
   and report events/s from the stream's own batch log (batches with data). Drain: publish them
   first, then time the stream draining the topic (Spark's capacity apart from the broker).
2. Latency: with the stream running, publish --rate events/s for --seconds, plus one probe event
   per second (a brand of its own, from a second producer); the time until its window shows it in
   gold_stream_funnel_hourly_brand is its latency, from the send call and from the broker's
   acknowledgement. Prints p50/p95 of both.
"""

from __future__ import annotations

import argparse
import json
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

from funnelpulse import generate_events
from funnelpulse.streaming.broker import create_topic, local_broker
from funnelpulse.streaming.replay import publish

LINE = re.compile(r"funnelpulse_windows batch (\d+): ([\d,]+) rows in ([\d.]+) s")


def start_stream(
    warehouse: Path, topic: str, bootstrap: str, *extra: str
) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "funnelpulse",
            "--warehouse",
            str(warehouse),
            "stream",
            "--source",
            f"kafka://{bootstrap}/{topic}",
            "--master",
            "local[2]",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(
        target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True
    ).start()  # type: ignore[union-attr]
    return proc, lines


def messages(count: int, seed: int, now: bool = False):  # type: ignore[no-untyped-def]
    table = generate_events(
        count,
        seed=seed,
        days=1 if now else 30,
        start=datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        if now
        else datetime(2019, 10, 1, tzinfo=UTC),
    )
    for row in table.to_pylist():
        row["event_time"] = row["event_time"].strftime("%Y-%m-%d %H:%M:%S UTC")
        yield json.dumps(row), row["user_session"]


def throughput(bootstrap: str, folder: Path, events: int, prefill: bool = False) -> None:
    """Publish while the stream consumes; with `prefill`, publish first and time only the stream
    draining the topic (Spark's own capacity, apart from the broker's publishing limit)."""
    topic = "bench-drain" if prefill else "bench-throughput"
    create_topic(bootstrap, topic)
    stream_args = ("--until-idle", "8", "--trigger-s", "1", "--max-rows-per-batch", "50000")

    def publish_all() -> None:
        started = time.perf_counter()
        sent = publish(
            f"kafka://{bootstrap}/{topic}", ((v, k, 0.0) for v, k in messages(events, 1))
        )
        took = time.perf_counter() - started
        print(
            f"publish: {sent.published:,} events in {took:.1f} s ({sent.published / took:,.0f}/s; the "
            f"local broker needs one record per batch){'' if not sent.failed else f'; {sent.failed:,} timed out'}"
        )

    if prefill:
        publish_all()
    proc, lines = start_stream(folder / f"wh-{topic}", topic, bootstrap, *stream_args)
    if not prefill:
        while not any("funnelpulse_windows batch 0" in line for line in lines):
            time.sleep(0.5)
        publish_all()
    out, _ = proc.communicate(timeout=900)
    batches = [
        (int(m.group(2).replace(",", "")), float(m.group(3))) for m in map(LINE.search, lines) if m
    ]
    with_data = [b for b in batches if b[0]]
    total = sum(n for n, _ in with_data)
    busy = sum(t for _, t in with_data)
    what = "draining the filled topic" if prefill else "while the broker delivered them"
    print(
        f"stream: {total:,} events in {len(with_data)} data batches, {busy:.1f} s of batch time: "
        f"{total / busy:,.0f} events/s processed {what}; {out.strip()}"
    )


def _percentiles(delays: list[float]) -> str:
    if not delays:
        return "none seen"
    delays = sorted(delays)
    p95 = delays[max(0, int(round(0.95 * len(delays))) - 1)]
    return f"p50 {statistics.median(delays):.1f} s, p95 {p95:.1f} s, max {delays[-1]:.1f} s"


def latency(bootstrap: str, folder: Path, rate: float, seconds: float) -> None:
    """Background events at `rate` from one producer; one probe per second from a second producer,
    so a probe is not queued behind the background backlog in the client. Reports the latency from
    the probe's send call and from the broker's acknowledgement of it (the event is in Kafka)."""
    from funnelpulse.streaming.replay import _producer

    create_topic(bootstrap, "bench-latency")
    warehouse = folder / "wh-latency"
    proc, lines = start_stream(warehouse, "bench-latency", bootstrap, "--trigger-s", "1")
    while not any("funnelpulse_windows batch" in line for line in lines):
        time.sleep(0.5)
    from funnelpulse import Pipeline, tables

    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    delivered: list[Any] = []
    stop = threading.Event()

    def background() -> None:
        source = messages(int(rate * seconds) + 10, 2, now=True)
        start = time.perf_counter()

        def stream_of():  # type: ignore[no-untyped-def]
            for i, (value, key) in enumerate(source):
                if stop.is_set() or i >= rate * seconds:
                    return
                row = json.loads(value) | {
                    "event_time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                }
                yield json.dumps(row), key, start + i / rate

        delivered.append(publish(f"kafka://{bootstrap}/bench-latency", stream_of()))

    def probes() -> None:
        producer = _producer(bootstrap)
        template = json.loads(next(messages(1, 3, now=True))[0])
        for n in range(int(seconds)):
            if stop.is_set():
                break
            name = f"probe{n}"
            row = template | {
                "brand": name,
                "event_type": "view",
                "event_time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            }

            def ack(err, _msg, name=name) -> None:  # type: ignore[no-untyped-def]
                if err is None:
                    acked[name] = time.time()

            sent[name] = time.time()
            producer.produce("bench-latency", value=json.dumps(row).encode(), on_delivery=ack)
            until = time.time() + 1.0
            while time.time() < until:
                producer.poll(0.05)
        producer.flush(30)

    threads = [threading.Thread(target=background), threading.Thread(target=probes)]
    for thread in threads:
        thread.start()
    seen: dict[str, float] = {}
    deadline = time.time() + seconds + 60
    live = Pipeline(warehouse=str(warehouse))
    while time.time() < deadline and (any(t.is_alive() for t in threads) or len(seen) < len(acked)):
        try:
            brands = set(live.table(tables.GOLD_STREAM).column("brand").to_pylist())
        except Exception:
            brands = set()
        now = time.time()
        for name in list(sent):
            if name not in seen and name in brands:
                seen[name] = now
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    background_sent = delivered[0] if delivered else None
    if background_sent is not None:
        print(
            f"background load: {background_sent.published:,} events delivered in "
            f"{background_sent.seconds:.1f} s ({background_sent.published / background_sent.seconds:,.0f}/s"
            f" of {rate:,.0f}/s offered; {background_sent.failed:,} timed out)"
        )
    print(
        f"latency at {rate:,.0f} events/s offered: {len(sent)} probes sent, {len(acked)} acknowledged "
        f"by the broker, {len(seen)} seen in the live table"
    )
    print(f"  from the send call: {_percentiles([seen[n] - sent[n] for n in seen])}")
    print(
        "  from the broker's acknowledgement: "
        + _percentiles([seen[n] - acked[n] for n in seen if n in acked])
    )
    order = sorted(seen, key=lambda n: sent[n])
    print("  per probe, in send order (s): " + " ".join(f"{seen[n] - sent[n]:.0f}" for n in order))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--data-dir", default="benchmarks/data/stream")
    parser.add_argument("--only", choices=["throughput", "drain", "latency"], default=None)
    args = parser.parse_args()
    folder = Path(args.data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with local_broker() as bootstrap:
        if args.only in (None, "throughput"):
            throughput(bootstrap, folder, args.events)
        if args.only in (None, "drain"):
            throughput(bootstrap, folder, args.events, prefill=True)
        if args.only in (None, "latency"):
            latency(bootstrap, folder, args.rate, args.seconds)


if __name__ == "__main__":
    main()
