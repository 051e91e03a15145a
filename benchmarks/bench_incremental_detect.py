"""Incremental detect: `detect` after a day-append into scored days, against a full `detect`.

One stationary shop (explicit generator options, no baskets) of DAYS + 1 days is generated once
and split by date: the history (the first DAYS days, less a sample of LATE events of the day
DAYS // 3) is ingested, built and detected; then
  A. the next day arrives (`ingest`, `build`), and `detect` is timed against `detect --full` of
     a copy of the same warehouse (all DAYS + 1 days);
  B. then the held-back late events of the older day arrive, and the same is timed again.
Each command is timed as the user's whole command (start to exit) in a fresh process. The
anomalies and incidents of each incremental detect are checked against the full one's (every
column but the detection time; floats to 1e-9).

Usage: python benchmarks/bench_incremental_detect.py [--rows 3000000] [--days 60] [--late 5000]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _appends import arguments, fp, generate_once, machine  # noqa: E402
from _measure import measure  # noqa: E402

GENERATE = """
from datetime import datetime, timedelta, UTC
import pyarrow as pa
import pyarrow.compute as pc
from funnelpulse import generate_events, write_events
from funnelpulse.generate import Shape
start = datetime(2019, 10, 1, tzinfo=UTC)
shape = Shape(basket_mean=1.0, growth=0.0, season=0.0, drift=0.0, promo_days=0.0)
events = generate_events(ROWS, seed=0, start=start, days=DAYS + 1, shape=shape)
day = pc.cast(pc.cast(events["event_time"], pa.timestamp("us")), pa.date32())
last = (start + timedelta(days=DAYS)).date()
old = (start + timedelta(days=DAYS // 3)).date()
new_mask = pc.equal(day, pa.scalar(last, pa.date32()))
old_idx = pc.indices_nonzero(pc.equal(day, pa.scalar(old, pa.date32())))
late_idx = old_idx.slice(0, LATE)
late_mask = pc.is_in(pa.array(range(events.num_rows)), late_idx)
history = events.filter(pc.and_(pc.invert(new_mask), pc.invert(late_mask)))
write_events(history, HISTORY)
write_events(events.filter(new_mask), NEW)
write_events(events.take(late_idx), LATEFILE)
print(history.num_rows, events.filter(new_mask).num_rows, len(late_idx))
"""

COMPARE = """
import math
from funnelpulse import tables
def rows(wh, name, drop):
    out = []
    for r in tables.read(tables.table_path(wh, name)).to_pylist():
        for k in drop:
            r.pop(k, None)
        out.append(r)
    return sorted(out, key=repr)
def same(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for k in x:
            if isinstance(x[k], float) and isinstance(y[k], float):
                if not math.isclose(x[k], y[k], rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif x[k] != y[k]:
                return False
    return True
a = rows(INC, "anomalies", ["detected_at"])
b = rows(FULL, "anomalies", ["detected_at"])
i = rows(INC, "incidents", ["updated_at", "first_recorded_at"])
j = rows(FULL, "incidents", ["updated_at", "first_recorded_at"])
print(len(a), same(a, b), len(i), same(i, j))
"""


def step(name: str, warehouse: Path, copy: Path) -> bool:
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(warehouse, copy)
    incremental = fp(warehouse, "detect")
    full = fp(copy, "detect", "--full")
    code = COMPARE.replace("INC", repr(str(warehouse))).replace("FULL", repr(str(copy)))
    anomalies, same_a, incidents, same_i = measure(code).output.split()
    print(
        f"{name}: detect {incremental:.1f} s, detect --full {full:.1f} s: "
        f"{100 * incremental / full:.0f}% (bar: 20%); {anomalies} anomalies equal: {same_a}, "
        f"{incidents} incidents equal: {same_i}"
    )
    shutil.rmtree(copy, ignore_errors=True)
    return same_a == "True" and same_i == "True"


def main() -> None:
    args = arguments(__doc__, rows=3_000_000)
    data = Path(args.data_dir)
    tag = f"{args.rows}-{args.days}d"
    history, new, late = (data / f"detect-{k}-{tag}.csv" for k in ("history", "append", "late"))
    gen = generate_once(GENERATE, args, {"HISTORY": history, "NEW": new, "LATEFILE": late})
    if gen:
        print("generated (history, new day, late rows):", gen.output)
    wh, copy = data / "wh-detect", data / "wh-detect-full"
    shutil.rmtree(wh, ignore_errors=True)
    print(machine())
    setup = fp(wh, "ingest", str(history)) + fp(wh, "build")
    first = fp(wh, "detect")
    print(f"history: {args.days} days, built in {setup:.1f} s; first detect {first:.1f} s")
    fp(wh, "ingest", str(new))
    fp(wh, "build")
    ok = step(f"A. day {args.days + 1} appended", wh, copy)
    fp(wh, "ingest", str(late))
    fp(wh, "build")
    ok = step(f"B. {args.late} late events of day {args.days // 3 + 1}", wh, copy) and ok
    if not ok:
        raise SystemExit(f"incremental detect differs from a full one (kept in {wh})")
    shutil.rmtree(wh, ignore_errors=True)


if __name__ == "__main__":
    main()
