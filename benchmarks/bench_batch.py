"""Batch benchmark: ingest + build on generated REES46-shaped data, next to one plain DuckDB query.

Usage: python benchmarks/bench_batch.py [--rows 9000000] [--files 1] [--data-dir benchmarks/data]
With --files N the data set is N generated files of --rows each (different seeds and months),
which is how the 10x scale run is made without holding 90M rows in the generator's memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure  # noqa: E402

REFERENCE_QUERY = """
import duckdb
con = duckdb.connect()
con.execute("SET TimeZone='UTC'")
con.execute("SET enable_progress_bar=false")
n = con.sql('''
SELECT date_trunc('hour', strptime(event_time, '%Y-%m-%d %H:%M:%S UTC')) AS window_start,
       lower(brand) AS brand,
       count_if(event_type = 'view') AS views, count_if(event_type = 'cart') AS carts,
       count_if(event_type = 'purchase') AS purchases,
       sum(CASE WHEN event_type = 'purchase' THEN price ELSE 0 END) AS revenue
FROM read_csv(FILES, header = true, columns = {'event_time': 'VARCHAR', 'event_type': 'VARCHAR',
     'product_id': 'BIGINT', 'category_id': 'BIGINT', 'category_code': 'VARCHAR', 'brand': 'VARCHAR',
     'price': 'DOUBLE', 'user_id': 'BIGINT', 'user_session': 'VARCHAR'})
WHERE price > 0
GROUP BY ALL
''').to_arrow_table().num_rows
print(n)
"""

PIPELINE = """
import time
from funnelpulse import Pipeline
p = Pipeline(warehouse=WAREHOUSE)
t0 = time.perf_counter()
r = p.ingest(FILES)
t1 = time.perf_counter()
b = p.build()
t2 = time.perf_counter()
print(f"ingest_s={t1 - t0:.2f} build_s={t2 - t1:.2f} bronze={r.bronze_rows} silver={b.rows['silver_events']} hourly_brand={b.rows['gold_funnel_hourly_brand']}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=9_000_000)
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--data-dir", default="benchmarks/data")
    args = parser.parse_args()
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(args.files):
        path = data / f"events-{args.rows}-seed{i}.csv"
        if not path.exists():
            gen = measure(
                "from datetime import datetime, timedelta, UTC\n"
                "from funnelpulse import generate_events, write_events\n"
                f"start = datetime(2019, 10, 1, tzinfo=UTC) + timedelta(days=61 * {i})\n"
                f"write_events(generate_events({args.rows}, seed={i}, start=start, days=61), {str(path)!r})\n"
            )
            print(
                f"generated {path} ({args.rows:,} rows) in {gen.wall_s:.1f}s, peak RSS {gen.peak_rss_mb:,.0f} MB"
            )
        files.append(str(path))
    total_rows = args.rows * args.files
    size_gb = sum(Path(f).stat().st_size for f in files) / 1e9
    warehouse = data / f"warehouse-{total_rows}"
    shutil.rmtree(warehouse, ignore_errors=True)

    ref = measure(REFERENCE_QUERY.replace("FILES", repr(files)))
    run = measure(PIPELINE.replace("WAREHOUSE", repr(str(warehouse))).replace("FILES", repr(files)))
    shutil.rmtree(warehouse, ignore_errors=True)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"data: {total_rows:,} rows in {args.files} CSV file(s), {size_gb:.2f} GB")
    print(
        f"pipeline ingest+build: {run.wall_s:.1f} s wall, peak RSS {run.peak_rss_mb:,.0f} MB ({run.output})"
    )
    print(
        f"reference single DuckDB query (CSV -> hourly brand): {ref.wall_s:.1f} s wall, peak RSS {ref.peak_rss_mb:,.0f} MB"
    )
    print(f"ratio pipeline / reference query: {run.wall_s / ref.wall_s:.2f}x")


if __name__ == "__main__":
    main()
