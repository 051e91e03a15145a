"""Plain DuckDB materializing the pipeline's tables: the near-limit reference of the batch build.

Reads the raw CSV once and writes, as plain Parquet files (no Delta log, no partitions, no line
accounting, no file hash, no journal): typed bronze, deduplicated silver, the four gold tables and
the daily and daily-brand session funnels (add --all-funnels for the category and price-band ones).
The SQL is written here on its own, from the rules the pipeline documents (src/funnelpulse/
contract.py and the models): same typing of the raw fields, same silver rule (positive price, a
time and a type; brand and category normalised; the first copy of each dedup key kept), same gold
groups, same ordered session funnel (24 h window from the session's first view, per session, held
constant per brand). bench_batch.py checks its row counts and totals against the pipeline's tables.

Usage: python benchmarks/bench_plain_duckdb.py FILE.csv [FILE.csv ...] --out DIR [--all-funnels]
Prints one JSON object: seconds per step, and rows and totals per table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import duckdb

# The dedup key of silver (contract.DEDUP_KEY); the first copy in file order survives.
KEY = "event_time, user_id, user_session, product_id, event_type"

BRONZE = r"""
COPY (
    SELECT ts AS event_time, etype AS event_type, pid AS product_id, cid AS category_id,
        NULLIF(category_code, '') AS category_code, NULLIF(brand, '') AS brand, p AS price,
        uid AS user_id, NULLIF(user_session, '') AS user_session, CAST(ts AS DATE) AS event_date
    FROM (
        SELECT *,
            try_strptime(event_time, '%Y-%m-%d %H:%M:%S UTC') AS ts,
            NULLIF(lower(trim(event_type)), '') AS etype,
            TRY_CAST(product_id AS BIGINT) AS pid, TRY_CAST(category_id AS BIGINT) AS cid,
            TRY_CAST(price AS DOUBLE) AS p, TRY_CAST(user_id AS BIGINT) AS uid
        FROM read_csv(?, header = true, all_varchar = true)
    )
    WHERE ts IS NOT NULL AND etype IN ('view', 'cart', 'remove_from_cart', 'purchase')
        AND pid IS NOT NULL AND uid IS NOT NULL
        AND (category_id IS NULL OR cid IS NOT NULL) AND (price IS NULL OR p IS NOT NULL)
        AND (p IS NULL OR NOT (p < 0 OR isnan(p) OR isinf(p)))
) TO '{out}/bronze.parquet' (FORMAT parquet)
"""

SILVER = f"""
COPY (
    SELECT event_time, event_type, product_id, category_id, category_code, brand, price,
        user_id, user_session,
        NULLIF(trim(lower(brand)), '') AS brand_norm,
        regexp_replace(lower(category_code), '[^a-z0-9.]', '_', 'g') AS category_code_norm,
        split_part(category_code_norm, '.', 1) AS category_root,
        CASE WHEN price < 10 THEN '<10' WHEN price < 30 THEN '10-30' WHEN price < 60 THEN '30-60'
            ELSE '60_plus' END AS price_band,
        user_session IS NULL AS dq_missing_session, brand IS NULL AS dq_missing_brand,
        category_code IS NULL AS dq_missing_category, event_date
    FROM read_parquet('{{out}}/bronze.parquet', file_row_number = true)
    WHERE price > 0
    QUALIFY row_number() OVER (PARTITION BY {KEY} ORDER BY file_row_number) = 1
) TO '{{out}}/silver.parquet' (FORMAT parquet)
"""

COUNTS = """count_if(event_type = 'view') AS views, count_if(event_type = 'cart') AS carts,
    count_if(event_type = 'purchase') AS purchases,
    sum(CASE WHEN event_type = 'purchase' THEN price ELSE 0.0 END) AS revenue"""
RATES = """carts / NULLIF(views, 0) AS view_to_cart_rate,
    purchases / NULLIF(carts, 0) AS cart_to_purchase_rate,
    purchases / NULLIF(views, 0) AS conversion_rate"""

GOLD = {
    "gold_funnel_hourly_brand": ("date_trunc('hour', event_time)", "brand_norm"),
    "gold_funnel_hourly_price_band": ("date_trunc('hour', event_time)", "price_band"),
    "gold_funnel_daily_brand": ("event_date", "brand_norm"),
    "gold_funnel_daily_category": ("event_date", "category_root"),
}

# Ordered funnel per session (and held value): entry = first view; cart = first cart within 24 h
# of the entry; purchase = first purchase at or after that cart within 24 h of the entry; revenue =
# those purchases. Counted on the entry's date; events without a session are counted apart.
FUNNEL = """
COPY (
    WITH ev AS (
        SELECT user_session AS s, {held} AS held, event_type AS kind, event_time AS t, price
        FROM '{out}/silver.parquet'
        WHERE user_session IS NOT NULL AND event_type IN ('view', 'cart', 'purchase')
    ),
    entry AS (SELECT s, held, min(t) AS t0 FROM ev WHERE kind = 'view' GROUP BY s, held),
    later AS (
        SELECT e.s, e.held, e.t0, x.kind, x.t, x.price
        FROM entry AS e JOIN ev AS x
            ON x.s = e.s AND x.held IS NOT DISTINCT FROM e.held AND x.kind <> 'view'
                AND x.t >= e.t0 AND x.t <= e.t0 + INTERVAL 1 DAY
    ),
    cart AS (SELECT s, held, min(t) AS tc FROM later WHERE kind = 'cart' GROUP BY s, held),
    buy AS (
        SELECT l.s, l.held, min(l.t) AS tp, sum(l.price) AS revenue
        FROM later AS l JOIN cart AS c ON c.s = l.s AND c.held IS NOT DISTINCT FROM l.held
        WHERE l.kind = 'purchase' AND l.t >= c.tc
        GROUP BY l.s, l.held
    ),
    person AS (
        SELECT CAST(e.t0 AS DATE) AS date, e.held,
            epoch_us(c.tc - e.t0) / 1e6 AS to_cart, epoch_us(b.tp - c.tc) / 1e6 AS to_buy,
            c.tc, b.tp, b.revenue
        FROM entry AS e
        LEFT JOIN cart AS c ON c.s = e.s AND c.held IS NOT DISTINCT FROM e.held
        LEFT JOIN buy AS b ON b.s = e.s AND b.held IS NOT DISTINCT FROM e.held
    ),
    per_day AS (
        SELECT date, held, count(*) AS sessions, count(tc) AS carted, count(tp) AS purchased,
            quantile_cont(to_cart, 0.5) AS median_seconds_to_cart,
            quantile_cont(to_cart, 0.9) AS p90_seconds_to_cart,
            quantile_cont(to_buy, 0.5) AS median_seconds_cart_to_purchase,
            quantile_cont(to_buy, 0.9) AS p90_seconds_cart_to_purchase,
            coalesce(sum(revenue), 0.0) AS revenue
        FROM person GROUP BY date, held
    ),
    no_session AS (
        SELECT event_date AS date, {held} AS held, count(*) AS events_without_session
        FROM '{out}/silver.parquet' WHERE user_session IS NULL GROUP BY ALL
    )
    SELECT date, held AS {held_name}, coalesce(sessions, 0) AS sessions,
        coalesce(carted, 0) AS carted, coalesce(purchased, 0) AS purchased,
        carted / NULLIF(sessions, 0) AS view_to_cart_rate,
        purchased / NULLIF(carted, 0) AS cart_to_purchase_rate,
        purchased / NULLIF(sessions, 0) AS conversion_rate,
        (carted - purchased) / NULLIF(carted, 0) AS cart_abandonment_rate,
        median_seconds_to_cart, p90_seconds_to_cart,
        median_seconds_cart_to_purchase, p90_seconds_cart_to_purchase,
        coalesce(revenue, 0.0) AS revenue,
        coalesce(events_without_session, 0) AS events_without_session
    FROM per_day FULL JOIN no_session USING (date, held)
) TO '{out}/{name}.parquet' (FORMAT parquet)
"""

FUNNELS = {
    "gold_session_funnel_daily": ("CAST(NULL AS VARCHAR)", "held"),
    "gold_session_funnel_daily_brand": ("brand_norm", "brand"),
    "gold_session_funnel_daily_category": ("category_root", "category_root"),
    "gold_session_funnel_daily_price_band": ("price_band", "price_band"),
}

# Totals that must match the pipeline's tables (beyond row counts).
TOTALS = {
    "bronze_events": "count(DISTINCT user_session), sum(price)",
    "silver_events": "count(DISTINCT user_session), sum(price)",
    "gold": "sum(views), sum(carts), sum(purchases), sum(revenue)",
    "funnel": "sum(sessions), sum(carted), sum(purchased), sum(revenue)",
}


def totals_sql(name: str, source: str) -> str:
    kind = (
        name
        if name in ("bronze_events", "silver_events")
        else ("funnel" if name.startswith("gold_session") else "gold")
    )
    return f"SELECT count(*), {TOTALS[kind]} FROM {source}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("csv", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--all-funnels", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar=false")
    seconds: dict[str, float] = {}

    def step(name: str, sql: str, params: list[str] | None = None) -> None:
        t0 = time.perf_counter()
        con.execute(sql, params or [])
        seconds[name] = round(time.perf_counter() - t0, 2)

    step("bronze", BRONZE.replace("{out}", str(out)), [args.csv])
    step("silver_events", SILVER.replace("{out}", str(out)))
    for name, (grain, group) in GOLD.items():
        step(
            name,
            f"COPY (SELECT {group} AS g, grain, {COUNTS}, {RATES} FROM (SELECT {grain} AS grain, "
            f"* FROM '{out}/silver.parquet') GROUP BY grain, {group}) "
            f"TO '{out}/{name}.parquet' (FORMAT parquet)",
        )
    funnels = FUNNELS if args.all_funnels else dict(list(FUNNELS.items())[:2])
    for name, (held, held_name) in funnels.items():
        step(name, FUNNEL.format(held=held, held_name=held_name, out=out, name=name))
    total = round(sum(seconds.values()), 2)
    tables = {}
    files = {"bronze_events": "bronze", "silver_events": "silver"}
    for name in ["bronze_events", "silver_events", *GOLD, *funnels]:
        source = f"'{out}/{files.get(name, name)}.parquet'"
        tables[name] = list(con.execute(totals_sql(name, source)).fetchone())
    con.close()
    print(json.dumps({"seconds": seconds, "total_s": total, "tables": tables}, default=float))


if __name__ == "__main__":
    main()
