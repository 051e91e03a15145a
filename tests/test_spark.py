"""The Spark engine: same SQL models, transpiled; parity with DuckDB on real and awkward data."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import row, write_csv

from funnelpulse import Pipeline, generate_events, tables, write_events

pytestmark = [pytest.mark.spark, pytest.mark.slow]
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
    assert "Warning: delta-spark is not on Spark's classpath" in done.stderr
    assert_same_tables(awkward, spark)


def test_spark_refuses_to_overwrite_delta_tables_with_parquet(demo_warehouse: Pipeline) -> None:
    from funnelpulse.errors import WarehouseError

    with pytest.raises(WarehouseError, match="delta-spark"):
        Pipeline(warehouse=demo_warehouse.warehouse, spark_master="local[1]").build(engine="spark")


def test_spark_submit_entry_point(awkward: Pipeline, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("funnelpulse-*.whl"))
    spark = spark_copy(awkward, tmp_path)
    import pyspark

    submit = Path(sys.executable).with_name("spark-submit")
    env = {
        **os.environ,
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    done = subprocess.run(
        [
            str(submit),
            "--master",
            "local[2]",
            "--py-files",
            str(wheel),
            str(ROOT / "deploy/spark/funnelpulse_job.py"),
            "--warehouse",
            spark.warehouse,
            "build",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "silver_events:" in done.stdout
    assert_same_tables(awkward, spark)


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
