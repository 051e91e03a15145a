"""Time to detect: how many event-time minutes after an incident starts the live (open-window)
path alerts, against the hourly path (final hours only), and false alerts per streamed day.

Per seed: `generate_events` draws history days + one streamed day with four labelled incidents on
the streamed day (shop-wide checkout fully broken; the top brand's checkout broken; a tracking
outage; a price band's cart drop). The history days go through ingest -> build (batch gold);
the streamed day is judged by the same silver rules and fed in micro-batches (5 event-time
minutes each by default) to
`update_buckets` (the 5-minute live table, real Delta MERGEs) with `check_live` (scoring,
incidents, the `alerts` journal and table, file sink) after every batch that completes a bucket.
Not through the Kafka broker: transport adds seconds of wall time, not event-time minutes.

"Detectable within 10 minutes": the segment's expected purchases in the 10 minutes after the
start are at least ln(1/alpha) (a complete checkout break then has P(0 purchases) < alpha, the
per-test alpha in force). Delays of incidents that are not are reported, not held to the bar.

Usage: python benchmarks/bench_live_detect.py [--seeds 101 102 103] [--rows-per-day 25000]
    [--history-days 21] [--data-dir benchmarks/data/live]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from funnelpulse import Pipeline, tables
from funnelpulse.anomaly import live_incidents as li
from funnelpulse.anomaly.detect import detect
from funnelpulse.anomaly.incidents import group_incidents
from funnelpulse.anomaly.live_data import segment_keys
from funnelpulse.anomaly.open_window import per_test_alpha
from funnelpulse.config import load_settings
from funnelpulse.generate import BAND_LABELS, Incident, generate_events, ranked_brands, write_events
from funnelpulse.streaming.buckets import update_buckets

START = datetime(2019, 10, 1, tzinfo=UTC)
BRANDS = 250


@dataclass
class Label:
    incident: Incident
    name: str


def plan(day: datetime, rng: np.random.Generator, seed: int) -> list[Label]:
    """Four incidents on the streamed day, in random order, in four separate daytime slots."""
    top = ranked_brands(BRANDS, seed)[0]
    kinds = [
        ("shop checkout broken", "drop", "shop", "all", "purchase", 1, 0.0),
        ("top brand checkout broken", "drop", "brand", top, "purchase", 2, 0.0),
        ("tracking outage", "outage", "shop", "all", "views", 1, 0.15),
        ("price band cart drop", "drop", "price_band", BAND_LABELS[0], "cart", 2, 0.45),
    ]
    order = rng.permutation(len(kinds))
    labels = []
    for slot, k in enumerate(order):
        name, kind, dim, seg, step, hours, factor = kinds[k]
        minute = int(rng.integers(0, 60))
        start = day + timedelta(hours=7 + 4 * slot, minutes=minute)
        labels.append(Label(Incident(f"L{slot}", kind, dim, seg, step, start, hours, factor), name))
    return labels


def related(dimension: str, segment: str, start: datetime, end: datetime, label: Incident) -> bool:
    """The detection benchmark's rule: overlaps in time, not another segment of the same dimension."""
    overlaps = start < label.end + timedelta(hours=1) and end > label.start
    return overlaps and not (dimension == label.dimension and segment != label.segment)


def expected_purchases_10min(
    history: pa.Table, label: Incident, days: int, brand_col: str = "brand"
) -> float:
    """Mean purchases of the label's segment in the hour of its start over the history, x 1/6."""
    hour = label.start.hour
    rows = history.filter(pc.equal(pc.hour(history["window_start"]), hour))
    if label.dimension == "brand":
        rows = rows.filter(pc.equal(rows[brand_col], label.segment))
    return float(pc.sum(rows["purchases"]).as_py() or 0) / days / 6


def run_seed(seed: int, args: argparse.Namespace, root: Path) -> dict[str, object]:
    rng = np.random.default_rng(seed + 5003)
    days = args.history_days + 1
    day = START + timedelta(days=args.history_days)
    labels = plan(day, rng, seed)
    clock = time.perf_counter()
    events = generate_events(
        args.rows_per_day * days,
        seed=seed,
        start=START,
        days=days,
        brands=BRANDS,
        incidents=[lab.incident for lab in labels],
    )
    cut = pa.scalar(day, pa.timestamp("us", "UTC"))
    folder = root / f"seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    hist_csv = write_events(events.filter(pc.less(events["event_time"], cut)), folder / "hist.csv")
    day_csv = write_events(
        events.filter(pc.greater_equal(events["event_time"], cut)), folder / "day.csv"
    )
    settings = load_settings(
        warehouse=str(folder / "wh"),
        alert_sinks=("file",),
        alert_file=str(folder / "alerts.jsonl"),
        min_severity="low",
    )
    main = Pipeline(settings)
    main.ingest([hist_csv])
    main.build()
    judged = Pipeline(warehouse=str(folder / "day_wh"))
    judged.ingest([day_csv])
    judged.build()
    silver = tables.read(tables.table_path(judged.warehouse, tables.SILVER)).sort_by("event_time")
    prepared = time.perf_counter() - clock

    keys = segment_keys(main.warehouse, settings.min_views)
    opts = li.options(settings, false_alerts_per_day=args.false_alerts_per_day)
    alpha = per_test_alpha(
        opts.false_alerts_per_day, len(keys), len(opts.steps), len(opts.window_minutes), 5
    )
    minute_of = (
        pc.divide(
            pc.subtract(silver["event_time"].cast(pa.int64()), int(day.timestamp() * 1e6)),
            60_000_000,
        )
        .to_numpy(zero_copy_only=False)
        .astype(np.int64)
    )
    clock = time.perf_counter()
    step = args.batch_minutes
    bounds = np.searchsorted(minute_of, np.arange(0, 24 * 60 + 1, step))
    check_s: list[float] = []
    merge_s: list[float] = []
    result = None
    for i in range(len(bounds) - 1):
        batch = silver.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))
        t = time.perf_counter()
        update_buckets(main.warehouse, batch, batch_id=i + 1)
        merge_s.append(time.perf_counter() - t)
        m = (i + 1) * step
        if m % 5 == 0:  # this batch completed a bucket: score the open window
            t = time.perf_counter()
            latest = day + timedelta(minutes=m, seconds=31)
            result = li.check_live(main.warehouse, settings, latest, opts=opts, keys=keys)
            check_s.append(time.perf_counter() - t)
    streamed = time.perf_counter() - clock
    incidents = result.incidents if result else []

    gold = tables.read(tables.table_path(main.warehouse, tables.GOLD_HOURLY_BRAND))
    gold = gold.filter(
        pc.greater_equal(
            gold["window_start"], pa.scalar(day - timedelta(days=14), pa.timestamp("us", "UTC"))
        )
    )
    per_label = []
    for lab in labels:
        inc = lab.incident
        hits = [
            i
            for i in incidents
            if related(i.dimension, i.segment, i.started_at, i.resolved_at or i.as_of, inc)
            and i.detected_at >= inc.start - timedelta(minutes=5)
        ]
        first = min((i.detected_at for i in hits), default=None)
        mu10 = expected_purchases_10min(gold, inc, 14)
        per_label.append(
            {
                "name": lab.name,
                "segment": f"{inc.dimension}:{inc.segment}",
                "start": inc.start,
                "delay_min": None if first is None else (first - inc.start).total_seconds() / 60,
                "mu10": mu10,
                "detectable": mu10 >= math.log(1 / alpha),
            }
        )
    false = [
        i
        for i in incidents
        if not any(
            related(i.dimension, i.segment, i.started_at, i.resolved_at or i.as_of, lab.incident)
            for lab in labels
        )
    ]
    sent = (
        len((folder / "alerts.jsonl").read_text().splitlines())
        if (folder / "alerts.jsonl").exists()
        else 0
    )

    # The hourly path on the same day: hours scored once final (window end + watermark).
    main.ingest([day_csv])
    main.build()
    found = detect(main.warehouse, settings, since=day.date(), write=False)
    rows = found.anomalies.to_pylist()
    hourly = group_incidents(rows)
    watermark = timedelta(seconds=settings.watermark_s)
    for entry, lab in zip(per_label, labels, strict=True):
        inc = lab.incident
        # the first window that fired on the label's segment once it had begun; it is alerted
        # when final: its end plus the watermark
        ends = [
            r["window_end"]
            for r in rows
            if related(r["dimension"], r["segment"], r["window_start"], r["window_end"], inc)
            and r["window_end"] > inc.start
        ]
        first_end = min(ends, default=None)
        entry["hourly_delay_min"] = (
            None if first_end is None else (first_end + watermark - inc.start).total_seconds() / 60
        )
    hourly_false = [
        h
        for h in hourly
        if not any(related(h.dimension, h.segment, h.start, h.end, lab.incident) for lab in labels)
    ]
    return {
        "seed": seed,
        "labels": per_label,
        "false": [(i.dimension, i.segment, i.started_at, i.step, i.type) for i in false],
        "hourly_false": len(hourly_false),
        "notices_sent": sent,
        "segments": len(keys),
        "alpha": alpha,
        "prepared_s": prepared,
        "streamed_s": streamed,
        "check_p50_s": statistics.median(check_s) if check_s else None,
        "check_max_s": max(check_s) if check_s else None,
        "merge_p50_s": statistics.median(merge_s) if merge_s else None,
        "events": silver.num_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    parser.add_argument("--rows-per-day", type=int, default=25_000)
    parser.add_argument("--history-days", type=int, default=21)
    parser.add_argument("--false-alerts-per-day", type=float, default=0.5)
    parser.add_argument("--batch-minutes", type=int, default=5, help="event time per micro-batch")
    parser.add_argument("--data-dir", default="benchmarks/data/live")
    args = parser.parse_args()
    root = Path(args.data_dir)
    results = []
    for seed in args.seeds:
        r = run_seed(seed, args, root)
        results.append(r)
        print(
            f"seed {seed}: {r['events']:,} streamed events, {r['segments']} segments, "
            f"alpha {r['alpha']:.2e}; prepare {r['prepared_s']:.0f} s, stream+score "
            f"{r['streamed_s']:.0f} s (check p50 {r['check_p50_s']:.2f} s, max "
            f"{r['check_max_s']:.2f} s; bucket MERGE p50 {r['merge_p50_s']:.3f} s); "
            f"{r['notices_sent']} notices sent"
        )
        for e in r["labels"]:  # type: ignore[union-attr]
            live = "missed" if e["delay_min"] is None else f"{e['delay_min']:.0f} min"
            hourly = (
                "missed" if e["hourly_delay_min"] is None else f"{e['hourly_delay_min']:.0f} min"
            )
            print(
                f"  {e['name']:<26} {e['segment']:<22} {e['start']:%H:%M}  live {live:>7}  "
                f"hourly {hourly:>8}  (expected purchases in 10 min {e['mu10']:.1f}, "
                f"{'detectable' if e['detectable'] else 'not detectable'} in 10 min)"
            )
        print(
            f"  false live incidents: {len(r['false'])} {r['false']}; hourly: {r['hourly_false']}"
        )
    print("\nsummary over seeds", args.seeds, f"({args.rows_per_day:,} events/day)")
    names = [e["name"] for e in results[0]["labels"]]  # type: ignore[index]
    for name in names:
        entries = [e for r in results for e in r["labels"] if e["name"] == name]  # type: ignore[union-attr]
        live = [e["delay_min"] for e in entries if e["delay_min"] is not None]
        det = [e["delay_min"] for e in entries if e["detectable"] and e["delay_min"] is not None]
        n_det = sum(e["detectable"] for e in entries)
        hourly = [e["hourly_delay_min"] for e in entries if e["hourly_delay_min"] is not None]
        med = lambda xs: f"{statistics.median(xs):.0f}" if xs else "-"  # noqa: E731
        print(
            f"  {name:<26} live: found {len(live)}/{len(entries)}, median delay {med(live)} min; "
            f"detectable {n_det}, median {med(det)} min | hourly: found {len(hourly)}/"
            f"{len(entries)}, median {med(hourly)} min"
        )
    false = sum(len(r["false"]) for r in results)  # type: ignore[arg-type]
    hourly_false = sum(int(r["hourly_false"]) for r in results)  # type: ignore[call-overload]
    print(
        f"  false alerts per streamed day: live {false / len(results):.2f}, "
        f"hourly {hourly_false / len(results):.2f}"
    )


if __name__ == "__main__":
    main()
