"""Ingest benchmark: what reading every line (and hashing every byte) costs.

Usage: python benchmarks/bench_ingest.py [--rows 2000000] [--repeat 3] [--data-dir benchmarks/data]
                                         [--baseline-src OTHER_CHECKOUT/src]

Each step runs in a fresh interpreter, `--repeat` times, interleaved so machine noise hits all
of them alike; the median is printed. Steps: the whole DuckDB-engine ingest of a generated CSV
(and of the same file gzipped), the content fingerprint alone (a full SHA-256 read of the file),
and, as the near-limit reference, DuckDB's own CSV reader feeding the same typing rules with
nothing written (it loses the lines after a stray quote, which is why ingest no longer uses it).
With --baseline-src the ingest and fingerprint steps also run on another checkout's code
(e.g. `git archive <commit> src | tar -x -C /tmp/old`), interleaved with this one.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure  # noqa: E402

INGEST = """
import time
from funnelpulse.warehouse import ingest
t = time.perf_counter()
r = ingest(WAREHOUSE, [FILE])
print(f"{time.perf_counter() - t:.3f} {r.bronze_rows} {r.quarantined_rows}")
"""

FINGERPRINT = """
import time
from funnelpulse.raw_lines import fingerprint
t = time.perf_counter()
fingerprint(FILE)
print(f"{time.perf_counter() - t:.3f}")
"""

REFERENCE = """
import time
from funnelpulse.localdb import connect
from funnelpulse.ingest import RAW_COLUMNS, TYPED_SQL
con = connect()
columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in RAW_COLUMNS) + "}"
t = time.perf_counter()
con.execute(f'''CREATE VIEW raw AS SELECT *, NULL::VARCHAR AS reader_reason,
    NULL::VARCHAR AS raw_text FROM read_csv('{FILE}', columns={columns}, header=true,
    auto_detect=false, delim=',', quote='"', escape='"', strict_mode=false)
    WITH ORDINALITY AS r({", ".join(RAW_COLUMNS)}, ordinal)''')
n = sum(b.num_rows for b in con.sql(TYPED_SQL).to_arrow_reader(256_000))
print(f"{time.perf_counter() - t:.3f} {n}")
"""


def _run(template: str, src: str | None = None, **values: str) -> list[str]:
    code = template
    for name, value in values.items():
        code = code.replace(name, repr(value))
    return measure(code, {"PYTHONPATH": src} if src else None).output.split()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", default="benchmarks/data")
    parser.add_argument("--baseline-src", help="another checkout's src/ folder to compare with")
    args = parser.parse_args()

    folder = Path(args.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"ingest-{args.rows}.csv"
    if not csv.exists():
        measure(
            "from funnelpulse.cli import main; import sys; "
            f"sys.argv = ['funnelpulse', 'generate', '--shape', 'plain', '--rows', '{args.rows}', '--out', {str(csv)!r}]; "
            "main()"
        )
    gz = csv.with_suffix(".csv.gz")
    if not gz.exists():
        with csv.open("rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
    gb = csv.stat().st_size / 1e9
    gz_gb = gz.stat().st_size / 1e9
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"data: {args.rows:,} rows, CSV {gb * 1000:.0f} MB, CSV.gz {gz_gb * 1000:.0f} MB")
    print(f"baseline code: {args.baseline_src or 'none'}")

    times: dict[str, list[float]] = {}
    counts: dict[str, str] = {}
    warehouse = folder / "ingest-warehouse"
    steps: list[tuple[str, str, Path, str | None]] = [
        ("ingest csv", INGEST, csv, None),
        ("ingest csv.gz", INGEST, gz, None),
        ("fingerprint csv", FINGERPRINT, csv, None),
        ("fingerprint csv.gz", FINGERPRINT, gz, None),
        ("reference: DuckDB CSV reader + typing, nothing written", REFERENCE, csv, None),
    ]
    if args.baseline_src:
        steps += [
            (f"baseline {label}", template, file, args.baseline_src)
            for label, template, file, _ in steps[:4]
        ]
    for _ in range(args.repeat):
        for label, template, file, src in steps:
            shutil.rmtree(warehouse, ignore_errors=True)
            out = _run(template, src, FILE=str(file), WAREHOUSE=str(warehouse))
            times.setdefault(label, []).append(float(out[0]))
            counts[label] = " ".join(out[1:])
    shutil.rmtree(warehouse, ignore_errors=True)

    reference = statistics.median(times["reference: DuckDB CSV reader + typing, nothing written"])
    for label, values in times.items():
        median = statistics.median(values)
        extra = f" rows {counts[label]}" if counts[label] else ""
        if "fingerprint" in label:
            size = gz_gb if label.endswith("gz") else gb
            extra += f" ({median / size:.2f} s per GB read)"
        base = times.get(f"baseline {label}")
        if base:
            extra += f", {median / statistics.median(base):.2f}x baseline"
        print(
            f"{label}: median {median:.2f} s of {[round(v, 2) for v in values]}"
            f"{extra}, {median / reference:.2f}x reference"
        )


if __name__ == "__main__":
    main()
