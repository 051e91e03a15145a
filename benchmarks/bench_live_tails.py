"""False live incidents on clean days at alpha x 1, 10, 100, 1000, and the streamed day's delays,
for one lower tail (`--tail`): re-scores a warehouse left by `bench_live_detect.py --via direct`.

The history days of that benchmark carry no incident, so every incident on them is false. Each
day is scored from silver (its 2-minute buckets) against the hourly gold and the week before it,
exactly as the live check would score it; a looser alpha shows how much margin the Bonferroni
budget leaves. Per step and window it also prints how often the drop tail is below 1e-1 .. 1e-4
on clean days, divided by that level (<= 1: the tail is not too confident there).

Usage: python benchmarks/bench_live_tails.py --data-dir DIR --seed 171 [--days 4] [--tail fragments]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow.dataset as ds
from bench_live_detect import plan, related

from funnelpulse import tables
from funnelpulse.anomaly import live_incidents as li
from funnelpulse.anomaly import open_window as ow
from funnelpulse.anomaly.live_data import _dense, _np, load_history, segment_keys
from funnelpulse.config import load_settings
from funnelpulse.streaming.buckets import aggregate

STREAMED = date(2019, 10, 22)  # bench_live_detect's streamed day (21 history days)
FACTORS = (1, 10, 100, 1000)


def day_scores(wh: str, day: date, keys: list, opts: ow.Options) -> tuple[ow.LiveGrid, ow.Scores]:
    d0 = datetime(day.year, day.month, day.day, tzinfo=UTC)
    silver = tables.table_path(wh, tables.SILVER)
    events = tables.dataset(silver).to_table(
        columns=["event_time", "event_type", "brand_norm", "price_band", "price"],
        filter=ds.field("event_date") == day,
    )
    starts = _np(d0) + np.arange(720) * np.timedelta64(2, "m")
    grid = ow.LiveGrid(starts, 2, keys, _dense(aggregate(events, 2), "bucket_start", starts, keys))
    first = d0 - timedelta(days=opts.history_days + 1)
    history = load_history(
        wh, first, d0 + timedelta(hours=23), keys, grid, fragments=opts.tail == "fragments"
    )
    return grid, ow.score(grid, history, opts)


def at(grid: ow.LiveGrid, s: ow.Scores, opts: ow.Options, factor: float) -> list:
    """The incidents at alpha x factor (scores computed at the loosest alpha)."""
    fields = {k: getattr(s, k) for k in s.__dataclass_fields__}
    looser = ow.Scores(**fields)
    looser.fired = s.fired & (s.p < s.alpha * factor / max(FACTORS))
    return li.track(grid, looser, opts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--days", type=int, default=4, help="clean days before the streamed one")
    parser.add_argument("--tail", choices=("inflation", "fragments"), default="inflation")
    args = parser.parse_args()
    wh = f"{args.data_dir}/seed{args.seed}-direct/wh"
    settings = load_settings(warehouse=wh)
    keys = segment_keys(wh, settings.min_views)
    opts = ow.Options(
        history_days=settings.history_days,
        false_alerts_per_day=settings.live_false_alerts_per_day * max(FACTORS),
        tail=args.tail,
    )
    tails: dict[tuple[str, int], list[np.ndarray]] = {}
    keep = ow._keep_best

    def recording(best, step, minutes, ok, low, *rest):  # type: ignore[no-untyped-def]
        tails.setdefault((step, minutes), []).append(np.where(ok, low, np.nan))
        return keep(best, step, minutes, ok, low, *rest)

    ow._keep_best = recording
    clock = time.perf_counter()
    false: dict[int, list] = {f: [] for f in FACTORS}
    for d in range(args.days):
        day = STREAMED - timedelta(days=1 + d)
        grid, s = day_scores(wh, day, keys, opts)
        for f in FACTORS:
            false[f] += [(str(day), i.dimension, i.segment, i.step) for i in at(grid, s, opts, f)]
    print(
        f"seed {args.seed}, tail {args.tail}: {args.days} clean days, {len(keys)} segments, "
        f"{time.perf_counter() - clock:.0f} s"
    )
    for f in FACTORS:
        print(
            f"  alpha x{f}: {len(false[f])} false incidents ({len(false[f]) / args.days:.2f} a day)"
        )
    for (step, minutes), parts in sorted(tails.items()):
        x = np.concatenate([p.ravel() for p in parts])
        x = x[np.isfinite(x)]
        print(
            f"  tail {step:<17}{minutes:>4} min n={len(x):6d} "
            + " ".join(f"<{q:g}: {(x < q).mean() / q:5.2f}" for q in (1e-1, 1e-2, 1e-3, 1e-4))
        )
    labels = plan(
        datetime(2019, 10, 22, tzinfo=UTC), np.random.default_rng(args.seed + 5003), args.seed
    )
    grid, s = day_scores(wh, STREAMED, keys, opts)
    for f in FACTORS:
        found = at(grid, s, opts, f)
        out = []
        for lab in labels:
            inc = lab.incident
            hits = [
                i.detected_at
                for i in found
                if related(i.dimension, i.segment, i.started_at, i.resolved_at or i.as_of, inc)
                and i.detected_at >= inc.start - timedelta(minutes=5)
            ]
            first = min(hits, default=None)
            out.append(
                f"{lab.name}: "
                + (
                    "missed"
                    if first is None
                    else f"{(first - inc.start).total_seconds() / 60:.0f} min"
                )
            )
        wrong = [
            i
            for i in found
            if not any(
                related(
                    i.dimension, i.segment, i.started_at, i.resolved_at or i.as_of, lab.incident
                )
                for lab in labels
            )
        ]
        print(f"  streamed day at alpha x{f}: " + "; ".join(out) + f"; false {len(wrong)}")


if __name__ == "__main__":
    main()
