"""Spark benchmark on the 9M-row set: every step (ingest, build, detect) on our Spark engine
(local[2]) next to the DuckDB engine, and a job written the way the original project's Spark jobs
run (reference-behaviour.md sections 2-4: inferSchema over the CSV, 200 shuffle partitions,
count() actions repeated without caching).

The Spark engine's driver heap is capped (`--driver-memory`, default 1g: in local mode every task
runs in it), and every table it writes is compared with the DuckDB engine's (row counts, and the
funnel totals of the gold tables) before the figures are printed.

Usage: python benchmarks/bench_spark.py [--rows 9000000] [--driver-memory 1g] [--no-reference]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure  # noqa: E402

STEP = """
from funnelpulse import Pipeline
p = Pipeline(warehouse=WAREHOUSE, spark_master="local[2]", engine=ENGINE,
             spark_driver_memory=DRIVER)
print(CALL)
"""


def step(warehouse: Path, engine: str, call: str, driver: str) -> object:
    return measure(
        STEP.replace("WAREHOUSE", repr(str(warehouse)))
        .replace("ENGINE", repr(engine))
        .replace("DRIVER", repr(driver))
        .replace("CALL", call)
    )


def compare(duck: Path, spark: Path) -> list[str]:
    """The tables on which the engines differ (row counts; funnel totals of gold tables)."""
    from funnelpulse import Pipeline, tables

    a, b = Pipeline(warehouse=str(duck)), Pipeline(warehouse=str(spark))
    differ = []
    for name in sorted(p.name for p in duck.iterdir() if not p.name.startswith("_")):
        if name == tables.ANOMALIES:
            continue
        left, right = a.table(name), b.table(name)
        same = left.num_rows == right.num_rows
        for column in ("views", "carts", "purchases"):
            if same and column in left.column_names:
                same = sum(left.column(column).to_pylist()) == sum(right.column(column).to_pylist())
        if not same:
            differ.append(name)
    return differ


REFERENCE_STYLE = """
import os, sys
os.environ["PYSPARK_PYTHON"] = sys.executable
from pyspark.sql import SparkSession, functions as F
spark = (SparkSession.builder.master("local[2]").appName("reference-style")
         .config("spark.sql.shuffle.partitions", "200").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
out = OUT
raw = spark.read.option("header", True).option("inferSchema", True).csv(CSV)
bronze = raw.withColumn("event_date", F.to_date("event_time"))
print("bronze rows", bronze.count())
bronze.write.mode("overwrite").partitionBy("event_date").parquet(out + "/bronze_events")
bronze = spark.read.parquet(out + "/bronze_events")
print("bronze rows (re-read)", bronze.count())
silver = (bronze.where("price IS NOT NULL AND price > 0 AND event_time IS NOT NULL AND event_type IS NOT NULL")
          .withColumn("brand_norm", F.lower("brand"))
          .withColumn("category_code_norm", F.regexp_replace(F.lower("category_code"), "[^a-z0-9.]", "_"))
          .withColumn("dq_missing_session", F.col("user_session").isNull())
          .withColumn("dq_missing_brand", F.col("brand").isNull())
          .withColumn("dq_missing_category", F.col("category_code").isNull()))
print("after filter", silver.count())
silver = silver.dropDuplicates(["event_time", "user_id", "user_session", "product_id", "event_type"])
print("silver rows", silver.count())
silver.write.mode("overwrite").partitionBy("event_date").parquet(out + "/silver_events")
silver = spark.read.parquet(out + "/silver_events")
metrics = [F.sum(F.when(F.col("event_type") == t, 1).otherwise(0)).cast("long").alias(n)
           for t, n in (("view", "views"), ("cart", "carts"), ("purchase", "purchases"))]
metrics.append(F.sum(F.when(F.col("event_type") == "purchase", F.col("price")).otherwise(0.0)).alias("revenue"))
def rates(df):
    return (df.withColumn("view_to_cart_rate", F.when(F.col("views") > 0, F.col("carts") / F.col("views")))
              .withColumn("cart_to_purchase_rate", F.when(F.col("carts") > 0, F.col("purchases") / F.col("carts")))
              .withColumn("conversion_rate", F.when(F.col("views") > 0, F.col("purchases") / F.col("views"))))
hourly = rates(silver.groupBy(F.window("event_time", "1 hour"), F.col("brand_norm").alias("brand")).agg(*metrics)
               .withColumn("window_start", F.col("window.start")).withColumn("window_end", F.col("window.end"))
               .drop("window").withColumn("window_date", F.to_date("window_start")))
hourly.write.mode("overwrite").partitionBy("window_date").parquet(out + "/gold_funnel_hourly_brand")
print("hourly brand rows", spark.read.parquet(out + "/gold_funnel_hourly_brand").count())
daily = rates(silver.groupBy(F.col("event_date").alias("date"), F.col("brand_norm").alias("brand")).agg(*metrics))
daily.write.mode("overwrite").partitionBy("date").parquet(out + "/gold_funnel_daily_brand")
category = rates(silver.withColumn("category_root", F.split("category_code_norm", "[.]").getItem(0))
                 .groupBy(F.col("event_date").alias("date"), "category_root").agg(*metrics))
category.write.mode("overwrite").partitionBy("date").parquet(out + "/gold_funnel_daily_category")
band = F.when(F.col("price") < 10, "<10").when(F.col("price") < 30, "10-30").when(F.col("price") < 60, "30-60").otherwise("60_plus")
bands = rates(silver.withColumn("price_band", band).groupBy(F.window("event_time", "1 hour"), "price_band").agg(*metrics)
              .withColumn("window_start", F.col("window.start")).drop("window")
              .withColumn("window_date", F.to_date("window_start")))
bands.write.mode("overwrite").partitionBy("window_date").parquet(out + "/gold_funnel_hourly_price_band")
spark.stop()
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=9_000_000)
    parser.add_argument("--data-dir", default="benchmarks/data")
    parser.add_argument("--driver-memory", default="1g", help="Spark driver heap (local[2])")
    parser.add_argument(
        "--no-reference", action="store_true", help="Skip the reference-style Spark job."
    )
    args = parser.parse_args()
    data = Path(args.data_dir)
    csv = data / f"events-{args.rows}-seed0.csv"
    if not csv.exists():
        data.mkdir(parents=True, exist_ok=True)
        measure(
            "from funnelpulse import generate_events, write_events\n"
            f"write_events(generate_events({args.rows}, seed=0, days=61), {str(csv)!r})"
        )
    duck = data / "spark-bench-duckdb"
    spark = data / "spark-bench-spark"
    ref = data / "spark-bench-reference"
    for folder in (duck, spark, ref):
        shutil.rmtree(folder, ignore_errors=True)
    calls = {
        "ingest": f"p.ingest([{str(csv)!r}]).bronze_rows",
        "build": "p.build().rows",
        "detect": "p.detect().anomalies.num_rows",
    }
    runs = {
        engine: {
            name: step(folder, engine, call, args.driver_memory) for name, call in calls.items()
        }
        for engine, folder in (("duckdb", duck), ("spark", spark))
    }
    differ = compare(duck, spark)
    print(f"data: {args.rows:,} rows ({csv.stat().st_size / 1e9:.2f} GB CSV)")
    print(f"Spark driver memory {args.driver_memory} (local[2])")
    print("tables equal on both engines" if not differ else f"TABLES DIFFER: {differ}")
    print(f"{'step':<8} {'DuckDB engine':>22} {'Spark engine local[2]':>30}")
    for name in calls:
        a, b = runs["duckdb"][name], runs["spark"][name]
        print(
            f"{name:<8} {a.wall_s:8.1f} s {a.peak_rss_mb:7,.0f} MB   {b.wall_s:8.1f} s "
            f"{b.peak_rss_mb:7,.0f} MB (driver Python)   outputs {a.output.splitlines()[-1][:60]} | "
            f"{b.output.splitlines()[-1][:60]}"
        )
    total = {e: sum(r.wall_s for r in runs[e].values()) for e in runs}
    print(f"total    {total['duckdb']:8.1f} s              {total['spark']:8.1f} s")
    batch = {e: runs[e]["ingest"].wall_s + runs[e]["build"].wall_s for e in runs}
    print(f"ingest+build: Spark / DuckDB = {batch['spark'] / batch['duckdb']:.1f}x")
    if args.no_reference:
        for folder in (duck, spark):
            shutil.rmtree(folder, ignore_errors=True)
        return
    reference = measure(
        REFERENCE_STYLE.replace("OUT", repr(str(ref))).replace("CSV", repr(str(csv)))
    )
    print(
        f"reference-style Spark job (CSV -> bronze -> silver -> 4 gold, local[2]): {reference.wall_s:6.1f} s"
    )
    print(f"  its output: {reference.output.splitlines()[-5:]}")
    print(
        f"ingest+build: DuckDB {batch['duckdb']:.1f} s, Spark engine {batch['spark']:.1f} s, "
        f"reference-style {reference.wall_s:.1f} s -> DuckDB {reference.wall_s / batch['duckdb']:.1f}x, "
        f"Spark engine {reference.wall_s / batch['spark']:.1f}x faster than the reference"
    )
    for folder in (duck, spark, ref):
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
