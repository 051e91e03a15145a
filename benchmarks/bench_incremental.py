"""Day-append benchmark: one new file into a built warehouse, against the same file into an empty one.

The new file holds the day after the history plus late events of an older day (the case that a
look-back window would miss). Each step is timed as the user's whole command (`funnelpulse
ingest FILE` then `funnelpulse build`, start to exit) in a fresh process. Afterwards the
incrementally built tables are checked against a full rebuild of the same bronze (row count and an
order-free hash of every row of every built table).

Usage: python benchmarks/bench_incremental.py [--rows 9000000] [--days 60] [--late 5000]
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
from funnelpulse import generate_events, write_events
start = datetime(2019, 10, 1, tzinfo=UTC)
history = generate_events(ROWS, seed=0, start=start, days=DAYS)
write_events(history, HISTORY)
per_day = ROWS // DAYS
new_day = generate_events(per_day, seed=1, start=start + timedelta(days=DAYS), days=1)
late = generate_events(LATE, seed=2, start=start + timedelta(days=DAYS // 3), days=1)
write_events(pa.concat_tables([new_day, late]), NEW)
print(new_day.num_rows + late.num_rows)
"""

CHECKSUMS = """
import duckdb
import pyarrow as pa
from funnelpulse import tables
from funnelpulse.engines.base import MODELS
from funnelpulse.funnel import GOLD_FUNNELS
con = duckdb.connect()
con.execute("SET enable_progress_bar=false")
for name in [m.name for m in MODELS] + list(GOLD_FUNNELS):
    data = tables.dataset(tables.table_path(WAREHOUSE, name))
    con.register("t", data)
    fields = ", ".join(
        f'round("{f.name}", 6)' if pa.types.is_floating(f.type) else f'"{f.name}"'
        for f in data.schema
    )
    n, h = con.execute(f"SELECT count(*), sum(hash({fields}))::HUGEINT FROM t").fetchall()[0]
    print(name, n, h)
    con.unregister("t")
"""


def main() -> None:
    args = arguments(__doc__, rows=9_000_000)
    data = Path(args.data_dir)
    history = data / f"history-{args.rows}-{args.days}d.csv"
    new = data / f"append-{args.rows}-{args.days}d.csv"
    gen = generate_once(GENERATE, args, {"HISTORY": history, "NEW": new})
    if gen:
        print(
            f"generated {history.name} and {new.name} ({gen.output} new rows) in {gen.wall_s:.0f} s"
        )
    built, empty, full = (data / f"wh-{k}" for k in ("built", "empty", "full"))
    for folder in (built, empty, full):
        shutil.rmtree(folder, ignore_errors=True)

    setup = fp(built, "ingest", str(history)) + fp(built, "build")
    append_ingest = fp(built, "ingest", str(new))
    append_build = fp(built, "build")
    fresh_ingest = fp(empty, "ingest", str(new))
    fresh_build = fp(empty, "build")
    shutil.copytree(built, full)
    full_build = fp(full, "build", "--full")
    sums_incremental = measure(CHECKSUMS.replace("WAREHOUSE", repr(str(built)))).output
    sums_full = measure(CHECKSUMS.replace("WAREHOUSE", repr(str(full)))).output
    same = sums_incremental == sums_full
    for a, b in zip(sums_incremental.splitlines(), sums_full.splitlines(), strict=True):
        if a != b:
            print(f"differs: incremental {a} | full {b}")

    append, fresh = append_ingest + append_build, fresh_ingest + fresh_build
    print(machine())
    print(
        f"history: {args.rows:,} events over {args.days} days (ingest + first build {setup:.1f} s)"
    )
    print(
        f"day-append into the built warehouse: ingest {append_ingest:.1f} s + build "
        f"{append_build:.1f} s = {append:.1f} s"
    )
    print(
        f"same file into an empty warehouse:   ingest {fresh_ingest:.1f} s + build "
        f"{fresh_build:.1f} s = {fresh:.1f} s"
    )
    print(f"ratio: {append / fresh:.2f}x (bar: 2x); build --full of all days: {full_build:.1f} s")
    print(f"tables equal a full rebuild: {same}")
    if same:
        for folder in (built, empty, full):
            shutil.rmtree(folder, ignore_errors=True)
    else:  # kept to look at
        raise SystemExit("incremental tables differ from a full rebuild")


if __name__ == "__main__":
    main()
