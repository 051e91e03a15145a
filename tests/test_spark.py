"""The Spark engine: same SQL models, transpiled; parity with DuckDB on real and awkward data."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import row, write_csv

from funnelpulse import Pipeline, generate_events, tables, write_events

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.usefixtures("shared_spark")]
GOLD = (
    tables.GOLD_HOURLY_BRAND,
    tables.GOLD_DAILY_BRAND,
    tables.GOLD_DAILY_CATEGORY,
    tables.GOLD_HOURLY_PRICE_BAND,
)
ROOT = Path(__file__).parents[1]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _rows(p: Pipeline, name: str) -> list[dict[str, Any]]:
    return sorted(
        ({k: _plain(v) for k, v in r.items()} for r in p.table(name).to_pylist()),
        key=lambda r: tuple(str(r[k]) for k in sorted(r) if isinstance(r[k], str) or r[k] is None),
    )


def assert_same_tables(duck: Pipeline, spark: Pipeline) -> None:
    assert duck.table(tables.SILVER).num_rows == spark.table(tables.SILVER).num_rows
    for name in GOLD:
        a, b = _rows(duck, name), _rows(spark, name)
        assert len(a) == len(b), name
        assert set(a[0]) == set(b[0]), name
        keyed_b = {tuple(str(r[k]) for k in sorted(r) if not isinstance(r[k], float)): r for r in b}
        for left in a:
            right = keyed_b[
                tuple(str(left[k]) for k in sorted(left) if not isinstance(left[k], float))
            ]
            for column, value in left.items():
                other = right[column]
                if isinstance(value, float) or isinstance(other, float):
                    assert (value is None) == (other is None), (name, column)
                    if value is not None:
                        assert math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-9), (
                            name,
                            column,
                            value,
                            other,
                        )
                else:
                    assert value == other, (name, column)


def spark_copy(duck: Pipeline, folder: Path) -> Pipeline:
    """A second warehouse holding the same bronze table, for the Spark engine to build into."""
    target = folder / "spark-warehouse"
    shutil.copytree(Path(duck.warehouse, tables.BRONZE), target / tables.BRONZE)
    return Pipeline(warehouse=str(target), spark_master="local[2]")


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    folder = tmp_path_factory.mktemp("awkward")
    lines = [
        row("2019-10-01 00:00:00", brand=""),  # NULL brand, exactly on the hour
        row("2019-10-01 00:59:59", etype="cart", brand=""),
        row("2019-10-01 01:00:00", etype="purchase", price="10.00"),  # band edge, hour edge
        row("2019-10-01 01:00:00", etype="purchase", price="10.00"),  # duplicate
        row("2019-10-01 23:59:59", price="0.00"),  # zero price
        row("2019-10-02 00:00:00", price="60.00", category_code="Furniture.Living Room"),
        row("2019-10-02 00:00:00", price="30.00", session=""),
        row("2019-10-02 00:00:00", price="30.00", session=""),  # NULL-session duplicate
        row(
            "2019-10-02 05:00:00", etype="purchase", brand="solo", price="9.99"
        ),  # 0 views, 0 carts
    ]
    p = Pipeline(warehouse=str(folder / "duck"))
    p.ingest(
        [
            write_csv(folder / "awkward.csv", lines),
            write_events(generate_events(30_000, seed=9, days=3, brands=40), folder / "gen.csv"),
        ]
    )
    p.build()
    return p


def test_parity_on_the_real_sample(demo_warehouse: Pipeline, tmp_path: Path) -> None:
    spark = spark_copy(demo_warehouse, tmp_path)
    result = spark.build(engine="spark")
    assert result.rows[tables.SILVER] == demo_warehouse.table(tables.SILVER).num_rows
    assert_same_tables(demo_warehouse, spark)
    # readers accept Spark's Parquet tables: the report is identical
    assert spark.report()["funnel"] == demo_warehouse.report()["funnel"]


def test_parity_on_awkward_generated_data(awkward: Pipeline, tmp_path: Path) -> None:
    spark = spark_copy(awkward, tmp_path)
    spark.build(engine="spark")
    assert_same_tables(awkward, spark)
    solo = [r for r in spark.table(tables.GOLD_HOURLY_BRAND).to_pylist() if r["brand"] == "solo"]
    assert solo[0]["conversion_rate"] is None and solo[0]["purchases"] == 1


def test_parity_on_separate_executor_jvms(awkward: Pipeline, tmp_path: Path) -> None:
    spark = spark_copy(awkward, tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "funnelpulse",
            "--warehouse",
            spark.warehouse,
            "build",
            "--engine",
            "spark",
            "--master",
            "local-cluster[2,1,1024]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert tables.is_delta(str(Path(spark.warehouse, tables.GOLD_HOURLY_BRAND)))
    assert_same_tables(awkward, spark)


def test_spark_rebuilds_a_duckdb_warehouse_in_place_as_delta(
    awkward: Pipeline, tmp_path: Path
) -> None:
    """Without delta-spark jars the Spark engine still writes Delta (driver-side commit), so it can
    rebuild tables DuckDB wrote, and a date-range rebuild replaces only the covered partitions."""
    target = tmp_path / "both"
    shutil.copytree(awkward.warehouse, target)
    spark = Pipeline(warehouse=str(target), spark_master="local[2]")
    before = tables.version(str(target / tables.GOLD_DAILY_BRAND))
    spark.build(engine="spark", since=date(2019, 10, 2), until=date(2019, 10, 2))
    assert tables.version(str(target / tables.GOLD_DAILY_BRAND)) == before + 1
    assert not list(target.rglob("_staging-*"))
    assert_same_tables(awkward, spark)
    spark.build(engine="spark")
    assert_same_tables(awkward, spark)


def _spark_submit(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    dist = tmp_path / "dist"
    if not list(dist.glob("funnelpulse-*.whl")):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
            check=True,
            capture_output=True,
        )
    wheel = next(dist.glob("funnelpulse-*.whl"))
    import pyspark

    env = {
        **os.environ,
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("spark-submit")),
            "--master",
            "local[2]",
            "--driver-memory",
            "900m",
            "--conf",
            "spark.sql.shuffle.partitions=3",
            "--py-files",
            str(wheel),
            str(ROOT / "deploy/spark/funnelpulse_job.py"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_spark_submit_runs_ingest_build_and_detect(awkward: Pipeline, tmp_path: Path) -> None:
    """The whole batch job on spark-submit with the project shipped as a wheel, every step on Spark."""
    warehouse = str(tmp_path / "cluster-warehouse")
    raw = [str(Path(awkward.warehouse).parent / n) for n in ("awkward.csv", "gen.csv")]
    out = {}
    for step in (["ingest", *raw], ["build"], ["detect"]):
        settings = ["--conf", "spark.driver.memory=5g"]  # ignored: spark-submit's JVM runs already
        done = _spark_submit("--warehouse", warehouse, *step, *settings, tmp_path=tmp_path)
        said = [line for line in done.stderr.splitlines() if " INFO " not in line]
        assert done.returncode == 0, "\n".join(said)[-3000:]  # the command's own message is there
        assert "Starting Spark" not in done.stderr  # the engine used spark-submit's session
        out[step[0]] = done.stdout
    spark = Pipeline(warehouse=warehouse)
    assert_same_tables(awkward, spark)
    silver_rows = spark.table(tables.SILVER).num_rows
    assert f"{tables.SILVER}: {silver_rows:,} rows" in out["build"]
    found = spark.table(tables.ANOMALIES).num_rows
    lines = out["detect"].splitlines()
    assert any(line.startswith(f"{found:,} anomalies") for line in lines), out["detect"][:600]


def _frame(p: Pipeline, name: str, drop: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    data = p.table(name)
    keep = [c for c in data.column_names if c not in drop]
    return sorted(tuple(_plain(v) for v in r.values()) for r in data.select(keep).to_pylist())


def test_spark_ingest_matches_duckdb_on_the_malformed_corpus(tmp_path: Path) -> None:
    from test_ingest import MALFORMED, ZONED

    path = write_csv(tmp_path / "bad.csv", MALFORMED)
    path.write_bytes(
        path.read_bytes()
        + b"2019-10-01 00:00:14 UTC,view,1,7,,\xff\xfeacme,5.00,10,s1\n"
        + row("2019-10-01 00:00:15").encode()
        + b"\n\n"  # a trailing blank line is not a row
        + row("2019-10-01 00:00:16", brand='"acme, inc."').encode()  # quoted comma
        + b"\n"
        + "\n".join(ZONED).encode()
        + b"\nx,y\n"  # after the blank line, line numbers still agree
    )
    duck = Pipeline(warehouse=str(tmp_path / "duck"))
    spark = Pipeline(warehouse=str(tmp_path / "spark"), spark_master="local[2]")
    a = duck.ingest([path])
    b = spark.ingest([path], engine="spark")
    assert (b.bronze_rows, b.quarantined_rows) == (a.bronze_rows, a.quarantined_rows) == (7, 16)
    assert b.files[0].reasons == a.files[0].reasons
    # source_row counts the rows DuckDB's reader could split; Spark counts lines after the header
    assert _frame(spark, tables.BRONZE, ("source_row",)) == _frame(
        duck, tables.BRONZE, ("source_row",)
    )
    quarantine = ("ingested_at", "raw_line")
    assert _frame(spark, tables.QUARANTINE, quarantine) == _frame(
        duck, tables.QUARANTINE, quarantine
    )
    raw_a = {r["line_number"]: r["raw_line"] for r in duck.table(tables.QUARANTINE).to_pylist()}
    raw_b = {r["line_number"]: r["raw_line"] for r in spark.table(tables.QUARANTINE).to_pylist()}
    assert {k: v for k, v in raw_b.items() if k != 18} == {
        k: v for k, v in raw_a.items() if k != 18
    }
    assert "acme" in raw_b[18]  # the undecodable bytes are replaced, the rest is kept
    # re-ingesting the same file replaces its rows
    spark.ingest([path], engine="spark")
    assert spark.table(tables.BRONZE).num_rows == 7
    assert spark.table(tables.QUARANTINE).num_rows == 16


def test_spark_ingest_build_and_detect_match_duckdb_on_the_real_sample(
    demo_warehouse: Pipeline, real_sample: list[Path], tmp_path: Path
) -> None:
    spark = Pipeline(warehouse=str(tmp_path / "spark"), spark_master="local[2]", engine="spark")
    result = spark.ingest(real_sample)
    assert result.bronze_rows == demo_warehouse.table(tables.BRONZE).num_rows
    assert _frame(spark, tables.BRONZE) == _frame(demo_warehouse, tables.BRONZE)
    spark.build()
    assert_same_tables(demo_warehouse, spark)
    assert spark.report()["funnel"] == demo_warehouse.report()["funnel"]


def test_detect_on_spark_equals_detect_on_duckdb(tmp_path: Path) -> None:
    """The heavy step of detection (silver -> hourly segment cube) on Spark gives the same anomalies."""
    from funnelpulse.generate import plan_incidents, ranked_brands

    start = datetime(2019, 10, 1, tzinfo=UTC)
    # Enough evidence that detection fires (tails widen for clustered, drifting segments).
    incidents = plan_incidents(6, start=start, days=14, brands=ranked_brands(30, 4), seed=4)
    events = generate_events(600_000, seed=4, days=14, brands=30, incidents=incidents)
    duck = Pipeline(warehouse=str(tmp_path / "wh"), spark_master="local[2]")
    duck.ingest([write_events(events, tmp_path / "ev.csv")])
    duck.build()
    a = duck.detect(engine="duckdb").anomalies
    b = duck.detect(engine="spark").anomalies
    assert a.num_rows > 0
    assert sorted(a.column("anomaly_id").to_pylist()) == sorted(b.column("anomaly_id").to_pylist())
    za = dict(zip(a.column("anomaly_id").to_pylist(), a.column("z").to_pylist(), strict=True))
    for key, z in zip(b.column("anomaly_id").to_pylist(), b.column("z").to_pylist(), strict=True):
        assert math.isclose(z, za[key], rel_tol=1e-9)


def test_missing_pyspark_names_the_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from funnelpulse.cli import main\n"
        f"sys.argv = ['funnelpulse', '--warehouse', {str(tmp_path)!r}, 'build', '--engine', 'spark']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "pip install 'funnelpulse[spark]'" in done.stderr
    assert "Traceback" not in done.stderr
