"""Labelled detection benchmark: a month of generated events with known incidents.

Usage: python benchmarks/bench_detect.py [--rows 4000000] [--days 30] [--incidents 24] [--seed 11]
Prints precision, recall, F1 and median detection delay of the seasonal and reference methods.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "funnelpulse", "-q", *args], cwd=cwd, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--incidents", type=int, default=24)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data-dir", default="benchmarks/data/detect")
    args = parser.parse_args()
    folder = Path(args.data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    run(
        "generate",
        "--rows",
        str(args.rows),
        "--days",
        str(args.days),
        "--out",
        "events.csv",
        "--seed",
        str(args.seed),
        "--inject",
        f"auto:{args.incidents}",
        cwd=folder,
    )
    run("ingest", "events.csv", cwd=folder)
    run("build", cwd=folder)
    prepared = time.perf_counter()
    print(
        f"data: {args.rows:,} events over {args.days} days, {args.incidents} injected incidents, seed {args.seed} "
        f"(generate+ingest+build {prepared - started:.1f} s)"
    )
    print(run("evaluate", "--labels", "events.csv.labels.json", cwd=folder).rstrip())
    print(f"evaluate (both methods): {time.perf_counter() - prepared:.1f} s")


if __name__ == "__main__":
    main()
