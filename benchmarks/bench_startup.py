"""Start-up cost of light commands: wall time of `funnelpulse --help` and friends, and what they import.

Usage: python benchmarks/bench_startup.py [--runs 5] [--baseline-src OTHER_TREE/src]

Each command runs `--runs` times as its own process (`python -m funnelpulse ...`), alternating
with the baseline tree's sources when one is given, so both see the same machine load. Prints the
median, min and max wall time, the modules `--help` loads and which heavy packages among them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "--help": ["--help"],
    "--version": ["--version"],
    "ingest --help": ["ingest", "--help"],
    "stream --help": ["stream", "--help"],
}
HEAVY = ("pyarrow", "pandas", "duckdb", "numpy", "scipy", "deltalake", "sqlglot", "rich")
LOADED = (
    "import contextlib, io, runpy, sys\n"
    "sys.argv = ['funnelpulse', '--help']\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    try:\n"
    "        runpy.run_module('funnelpulse', run_name='__main__')\n"
    "    except SystemExit:\n"
    "        pass\n"
    f"print(len(sys.modules), sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-src", default=None, help="another tree's src/ to compare")
    args = parser.parse_args()
    trees = {"this tree": str(Path(__file__).resolve().parent.parent / "src")}
    if args.baseline_src:
        trees["baseline"] = str(Path(args.baseline_src).resolve())
    times: dict[tuple[str, str], list[float]] = {(t, c): [] for t in trees for c in COMMANDS}
    for _ in range(args.runs):
        for command, argv in COMMANDS.items():
            for tree, src in trees.items():
                env = {**os.environ, "PYTHONPATH": src}
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "funnelpulse", *argv], env=env, capture_output=True
                )
                times[(tree, command)].append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise SystemExit(done.stderr.decode()[-2000:])
    for command in COMMANDS:
        cells = []
        for tree in trees:
            v = times[(tree, command)]
            cells.append(
                f"{tree}: median {statistics.median(v):.3f} s (min {min(v):.3f}, max {max(v):.3f})"
            )
        print(f"{command:15} " + "   ".join(cells))
    for tree, src in trees.items():
        done = subprocess.run(
            [sys.executable, "-c", LOADED],
            env={**os.environ, "PYTHONPATH": src},
            capture_output=True,
            text=True,
        )
        count, _, heavy = done.stdout.strip().partition(" ")
        print(f"{tree}: `--help` loads {count} modules; heavy packages among them: {heavy}")
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
