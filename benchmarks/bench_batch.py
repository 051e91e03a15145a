"""Batch benchmark: `funnelpulse ingest` + `funnelpulse build --full` against plain DuckDB writing
the same tables from the same CSV (benchmarks/bench_plain_duckdb.py), in one run.

Each step is the user's whole command in a fresh process (start to exit), timed with its peak RSS.
Afterwards the reference's row counts and totals are checked against the pipeline's silver, four
gold and session-funnel tables: a reference that computed something else would prove nothing.

Usage: python benchmarks/bench_batch.py [--rows 9000000] [--files 1] [--data-dir benchmarks/data]
The data is `funnelpulse generate --shape plain` (stationary, no baskets: the shape is pinned so a
new generator default does not move the baseline), 61 days per file; with --files N, N files of
--rows each (seeds 0..N-1, consecutive 61-day periods), which is how the 10x run is made without
holding 90M rows in the generator's memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from bench_plain_duckdb import FUNNELS, GOLD, totals_sql  # noqa: E402

CLI = [sys.executable, "-m", "funnelpulse"]


@dataclass
class Run:
    wall_s: float
    cpu_s: float  # user + system CPU seconds: steadier than wall time on a shared machine
    peak_rss_mb: float
    output: str


def run(argv: list[str]) -> Run:
    """Run a command to its end; wall time and the peak RSS of it and its waited-for children."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(argv)}\n{output}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, cpu, usage.ru_maxrss / 1024, output.strip())


def pipeline_totals(warehouse: Path, names: list[str]) -> dict[str, list[float]]:
    from funnelpulse import tables

    found = {}
    for name in names:
        con = duckdb.connect()
        con.register("t", tables.dataset(tables.table_path(str(warehouse), name)))
        found[name] = list(con.execute(totals_sql(name, "t")).fetchall()[0])
        con.close()
    return found


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-6)
        for x, y in zip(a, b, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=9_000_000)
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--data-dir", default="benchmarks/data")
    parser.add_argument(
        "--reference-first", action="store_true", help="run plain DuckDB before the pipeline"
    )
    args = parser.parse_args()
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(args.files):
        csv = data / f"plain-{args.rows}-seed{i}.csv"
        start = (date(2019, 10, 1) + timedelta(days=61 * i)).isoformat()
        if not csv.exists():
            gen = run([*CLI, "generate", "--rows", str(args.rows), "--shape", "plain",
                       "--seed", str(i), "--start", start, "--out", str(csv)])  # fmt: skip
            print(f"generated {csv} in {gen.wall_s:.1f} s")
        files.append(str(csv))
    size_gb = sum(Path(f).stat().st_size for f in files) / 1e9
    total_rows = args.rows * args.files
    warehouse = data / f"warehouse-{total_rows}"
    reference_out = data / f"plain-duckdb-{total_rows}"
    shutil.rmtree(warehouse, ignore_errors=True)
    print(f"load before: {os.getloadavg()}")

    wh = ["--warehouse", str(warehouse)]
    plain = [sys.executable, str(Path(__file__).parent / "bench_plain_duckdb.py"), *files,
             "--out", str(reference_out), "--all-funnels"]  # fmt: skip
    if args.reference_first:
        ref = run(plain)
    ingest = run([*CLI, *wh, "ingest", *files])
    build = run([*CLI, *wh, "--log-level", "info", "build", "--full"])
    if not args.reference_first:
        ref = run(plain)
    print(f"load after: {os.getloadavg()}")
    reference = json.loads(ref.output.splitlines()[-1])
    ref_tables = reference["tables"]
    ours = pipeline_totals(warehouse, list(ref_tables))

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"data: {total_rows:,} rows in {args.files} CSV file(s), {size_gb:.2f} GB")
    print("build log:\n" + build.output)
    for name, r in (("ingest", ingest), ("build --full", build)):
        print(
            f"funnelpulse {name}: {r.wall_s:.1f} s wall, {r.cpu_s:.1f} s CPU, "
            f"peak RSS {r.peak_rss_mb:,.0f} MB"
        )
    pipeline_s = ingest.wall_s + build.wall_s
    pipeline_cpu = ingest.cpu_s + build.cpu_s
    print(f"pipeline ingest + build: {pipeline_s:.1f} s wall, {pipeline_cpu:.1f} s CPU")
    steps = reference["seconds"]
    two_funnels = sum(v for k, v in steps.items() if k not in list(FUNNELS)[2:])
    print(f"plain DuckDB steps (s): {steps}")
    print(
        f"plain DuckDB, whole process (4 funnels): {ref.wall_s:.1f} s, peak RSS "
        f"{ref.peak_rss_mb:,.0f} MB; its steps without the category and price-band funnels: "
        f"{two_funnels:.1f} s (+ start-up {ref.wall_s - reference['total_s']:.1f} s)"
    )
    two_wall = two_funnels + (ref.wall_s - reference["total_s"])
    print(f"ratio, pipeline / plain DuckDB with the same four session funnels: "
          f"{pipeline_s / ref.wall_s:.2f}x wall, {pipeline_cpu / ref.cpu_s:.2f}x CPU "
          f"(plain DuckDB {ref.cpu_s:.1f} s CPU)")  # fmt: skip
    print(f"ratio, pipeline / plain DuckDB with the daily and daily-brand funnels only: "
          f"{pipeline_s / two_wall:.2f}x")  # fmt: skip
    ok = True
    for name, expected in ref_tables.items():
        match = same(expected, ours[name])
        ok &= match
        print(
            f"  {name}: reference {expected} pipeline {ours[name]} {'equal' if match else 'DIFFER'}"
        )
    print("tables equal: " + ("yes" if ok else "NO"))
    assert set(ref_tables) == {"bronze_events", "silver_events", *GOLD, *FUNNELS}
    shutil.rmtree(warehouse, ignore_errors=True)
    shutil.rmtree(reference_out, ignore_errors=True)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
