"""What the append benchmarks (bench_incremental.py, bench_incremental_detect.py) share: their
flags, the data files they generate once and keep, and a command timed from start to exit."""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from _measure import Measured, measure


def arguments(doc: str, rows: int) -> argparse.Namespace:
    """The flags both take (`rows` is the default size); the data folder exists afterwards."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--late", type=int, default=5_000)
    parser.add_argument("--data-dir", default="benchmarks/data")
    args = parser.parse_args()
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    return args


def generate_once(code: str, args: argparse.Namespace, files: dict[str, Path]) -> Measured | None:
    """Run the generator snippet `code` in a fresh process unless all `files` exist already.

    In `code` the words ROWS, DAYS and LATE stand for the flags and each key of `files` for that
    file's path (replaced as whole words in one pass, so LATEFILE is not LATE + FILE)."""
    if all(path.exists() for path in files.values()):
        return None
    values = {"ROWS": str(args.rows), "DAYS": str(args.days), "LATE": str(args.late)}
    values |= {name: repr(str(path)) for name, path in files.items()}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, values)) + r")\b")
    return measure(pattern.sub(lambda m: values[m.group(1)], code))


def fp(warehouse: Path, *args: str) -> float:
    """Seconds of `funnelpulse --quiet --warehouse W ARGS...` as the user runs it."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "funnelpulse", "--quiet", "--warehouse", str(warehouse), *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def machine() -> str:
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
