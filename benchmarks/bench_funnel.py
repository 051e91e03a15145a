"""Session funnel benchmark: the four gold_session_funnel_daily* tables and one `funnel --by brand`,
each beside a hand-written DuckDB query computing the same numbers (the near-limit reference),
in the same run, interleaved, each step in a fresh interpreter (wall time and peak RSS).

Usage: flock /tmp/heavy.lock python benchmarks/bench_funnel.py [--rows 9000000] [--repeat 3]
       [--warehouse DIR]   (reuse a warehouse already built from `funnelpulse generate` output)
       [--memory-mb 1536]  (funnel_memory_mb for ours; the reference runs under the same cap
                            and, as a second reference, under DuckDB's default limit)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import Measured, measure  # noqa: E402

# The reference: written by hand for this one job (no template, no date pruning, no breakdown
# options), one statement per table: first view per session and key, every cart/purchase of it
# inside the window in one join, then the aggregate.
REFERENCE = """
WITH ev AS (
    SELECT user_session AS u, {key} AS k, event_type AS t, event_time AS ts, price
    FROM silver_events WHERE user_session IS NOT NULL
), en AS (
    SELECT u, k, MIN(ts) AS entry FROM ev WHERE t = 'view' GROUP BY ALL
), j AS (
    SELECT en.u, en.k, ev.t, ev.ts, ev.price
    FROM en JOIN ev ON ev.u = en.u AND ev.k IS NOT DISTINCT FROM en.k
    WHERE ev.t <> 'view' AND ev.ts >= en.entry AND ev.ts <= en.entry + INTERVAL 86400 SECOND
), c AS (
    SELECT u, k, MIN(ts) AS cart FROM j WHERE t = 'cart' GROUP BY ALL
), a AS (
    SELECT en.k, en.entry, c.cart,
        MIN(j.ts) FILTER (WHERE j.t = 'purchase' AND j.ts >= c.cart) AS buy,
        SUM(j.price) FILTER (WHERE j.t = 'purchase' AND j.ts >= c.cart) AS rev
    FROM en LEFT JOIN c ON c.u = en.u AND c.k IS NOT DISTINCT FROM en.k
    LEFT JOIN j ON j.u = c.u AND j.k IS NOT DISTINCT FROM c.k
    GROUP BY en.u, en.k, en.entry, c.cart
), f AS (
    SELECT {grain} AS g, k, COUNT(*) AS sessions, COUNT(cart) AS carted, COUNT(buy) AS purchased,
        quantile_cont(epoch_us(cart) - epoch_us(entry), [0.5, 0.9]) AS to_cart,
        quantile_cont(epoch_us(buy) - epoch_us(cart), [0.5, 0.9]) AS to_buy,
        COALESCE(SUM(rev), 0) AS revenue
    FROM a GROUP BY ALL
), nos AS (
    SELECT {event_grain} AS g, {key} AS k, COUNT(*) AS n
    FROM silver_events WHERE user_session IS NULL GROUP BY ALL
)
SELECT COALESCE(f.g, nos.g) AS g, COALESCE(f.k, nos.k) AS k,
    COALESCE(sessions, 0) AS sessions, COALESCE(carted, 0) AS carted,
    COALESCE(purchased, 0) AS purchased,
    carted / NULLIF(sessions, 0) AS view_to_cart_rate,
    purchased / NULLIF(carted, 0) AS cart_to_purchase_rate,
    purchased / NULLIF(sessions, 0) AS conversion_rate,
    (carted - purchased) / NULLIF(carted, 0) AS cart_abandonment_rate,
    to_cart[1] / 1e6 AS median_seconds_to_cart, to_cart[2] / 1e6 AS p90_seconds_to_cart,
    to_buy[1] / 1e6 AS median_seconds_cart_to_purchase,
    to_buy[2] / 1e6 AS p90_seconds_cart_to_purchase,
    COALESCE(revenue, 0) AS revenue, COALESCE(n, 0) AS events_without_session
FROM f FULL JOIN nos ON f.g IS NOT DISTINCT FROM nos.g AND f.k IS NOT DISTINCT FROM nos.k
"""
KEYS = {
    "gold_session_funnel_daily": "CAST(NULL AS VARCHAR)",
    "gold_session_funnel_daily_brand": "brand_norm",
    "gold_session_funnel_daily_category": "category_root",
    "gold_session_funnel_daily_price_band": "price_band",
}

OURS_BUILD = """
import time
from funnelpulse import funnel
from funnelpulse.console import SilentProgress
from funnelpulse.engines.base import DateRange
t = time.perf_counter()
rows = funnel.build_gold_duckdb({wh!r}, DateRange(), SilentProgress(), {memory} or None)
print(time.perf_counter() - t, sum(rows.values()))
"""

REFERENCE_RUN = """
import json, shutil, tempfile, time
import pyarrow.parquet as pq
from funnelpulse import tables
from funnelpulse.localdb import connect
queries = json.loads({queries!r})
t = time.perf_counter()
con = connect()
if {memory}:
    spill = tempfile.mkdtemp()
    con.execute("SET memory_limit='{memory}MB'")
    con.execute(f"SET temp_directory='{{spill}}'")
con.register("silver_events", tables.dataset(tables.table_path({wh!r}, "silver_events")))
n = 0
for name, sql in queries.items():
    out = con.sql(sql).to_arrow_table()
    pq.write_table(out, f"{out_dir}/{{name}}.parquet")
    n += out.num_rows
print(time.perf_counter() - t, n)
if {memory}:
    shutil.rmtree(spill)
"""


def reference_sql(key: str, grain: bool) -> str:
    return REFERENCE.format(
        key=key,
        grain="CAST(entry AS DATE)" if grain else "CAST(NULL AS DATE)",
        event_grain="event_date" if grain else "CAST(NULL AS DATE)",
    )


def run(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "funnelpulse", "-q", *args], cwd=cwd, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)


def _close(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)  # type: ignore[arg-type]
    return a == b


def same_numbers(ours: list[dict], ref: list[dict], key: str | None, grain: str | None) -> None:
    """Fail the benchmark unless both computed exactly the same rows."""

    def index(rows: list[dict], k: str | None, g: str | None) -> dict:
        return {(r[g] if g else None, r[k] if k else None): r for r in rows}

    a, b = index(ours, key, grain), index(ref, "k", "g")
    if set(a) != set(b):
        raise SystemExit(f"reference and funnel disagree on groups: {len(a)} vs {len(b)}")
    for group, row in a.items():
        for column, value in b[group].items():
            if column in ("g", "k"):
                continue
            if not _close(row[column], value):
                raise SystemExit(f"{group} {column}: funnel {row[column]} vs reference {value}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=9_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warehouse", default=None)
    parser.add_argument("--data-dir", default="benchmarks/data/funnel")
    parser.add_argument("--memory-mb", type=int, default=None, help="default: funnel_memory_mb's")
    args = parser.parse_args()
    folder = Path(args.data_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if args.warehouse:
        wh = str(Path(args.warehouse).resolve())
    else:
        wh = str(folder / "warehouse")
        started = time.perf_counter()
        run(
            "generate",
            "--shape",
            "plain",
            "--rows",
            str(args.rows),
            "--out",
            "events.parquet",
            cwd=folder,
        )
        run("--warehouse", wh, "ingest", "events.parquet", cwd=folder)
        run("--warehouse", wh, "build", cwd=folder)
        print(
            f"data: {args.rows:,} generated events (prepared in {time.perf_counter() - started:.0f} s)"
        )

    from funnelpulse import funnel, tables

    memory = funnel.DEFAULT_MEMORY_MB if args.memory_mb is None else args.memory_mb
    print(f"memory cap: {memory} MB for ours and the capped reference (0: none)")
    silver_rows = tables.dataset(tables.table_path(wh, tables.SILVER)).count_rows()
    print(f"silver_events: {silver_rows:,} rows; {args.repeat} interleaved runs, best and median")
    queries = {name: reference_sql(key, grain=True) for name, key in KEYS.items()}
    by_brand = {"brand": reference_sql("brand_norm", grain=False)}
    labels = ("build", "build_ref", "build_ref_free", "query", "query_ref", "query_ref_free")
    results: dict[str, list[Measured]] = {k: [] for k in labels}
    inner: dict[str, list[float]] = {k: [] for k in results}
    for _ in range(args.repeat):

        def ref(chosen: dict[str, str], cap: int) -> str:
            return REFERENCE_RUN.format(
                queries=json.dumps(chosen), wh=wh, out_dir=folder, memory=cap
            )

        def in_process(code: str) -> str:
            return (
                "import subprocess, sys, time\nt = time.perf_counter()\n"
                f"subprocess.run([sys.executable, '-c', {code!r}], check=True)\n"
                "print(time.perf_counter() - t, 0)"
            )

        for label, code in (
            ("build", OURS_BUILD.format(wh=wh, memory=memory)),
            ("build_ref", ref(queries, memory)),
            ("build_ref_free", ref(queries, 0)),
            (
                "query",
                "import os, subprocess, sys, time\nt = time.perf_counter()\n"
                "out = subprocess.run([sys.executable, '-m', 'funnelpulse', '--warehouse', "
                f"{wh!r}, 'funnel', '--by', 'brand', '--format', 'json'], capture_output=True, "
                "text=True, check=True, env={**os.environ, 'FUNNELPULSE_FUNNEL_MEMORY_MB': "
                f"'{memory}'}}).stdout\nopen({str(folder / 'brand.json')!r}, 'w').write(out)\n"
                "print(time.perf_counter() - t, 0)",
            ),
            ("query_ref", in_process(ref(by_brand, memory))),
            ("query_ref_free", in_process(ref(by_brand, 0))),
        ):
            m = measure(code)
            results[label].append(m)
            inner[label].append(float(m.output.split()[-2]))

    # The numbers must be the same before the times mean anything.
    import pyarrow.parquet as pq

    for name, by in funnel.GOLD_FUNNELS.items():
        ours = funnel.read_gold(wh, name).to_pylist()
        key = funnel.BREAKDOWNS[by][1] if by else None
        same_numbers(ours, pq.read_table(folder / f"{name}.parquet").to_pylist(), key, "date")
    brand_rows = json.loads((folder / "brand.json").read_text())["rows"]
    same_numbers(brand_rows, pq.read_table(folder / "brand.parquet").to_pylist(), "brand", None)
    print("numbers: identical to the reference (all four tables and the --by brand query)")

    def line(label: str, title: str) -> None:
        best, median = min(inner[label]), statistics.median(inner[label])
        rss = max(m.peak_rss_mb for m in results[label])
        print(f"{title:<46} best {best:6.2f} s  median {median:6.2f} s  peak RSS {rss:6.0f} MB")

    line("build", f"four gold_session_funnel_daily* tables, cap {memory} MB")
    line("build_ref", "  reference: 4 hand-written queries, same cap")
    line("build_ref_free", "  reference: 4 hand-written queries, no cap")
    line("query", f"funnelpulse funnel --by brand (CLI process), cap {memory} MB")
    line("query_ref", "  reference: 1 hand-written query (process), same cap")
    line("query_ref_free", "  reference: 1 hand-written query (process), no cap")
    for ours in ("build", "query"):
        for against in (f"{ours}_ref", f"{ours}_ref_free"):
            print(
                f"ratio {ours} / {against}: best {min(inner[ours]) / min(inner[against]):.2f}x, "
                f"median {statistics.median(inner[ours]) / statistics.median(inner[against]):.2f}x"
            )


if __name__ == "__main__":
    main()
