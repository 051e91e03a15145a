"""Spark sized for where it runs, bounded in memory per task, and its failures told plainly.

The settings tests need no JVM; the runs that start one are marked spark/slow and each starts its
own Spark process (`funnelpulse` as a subprocess): driver memory only takes effect in a new JVM,
and a JVM that is killed must not be the shared one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fp, row, write_csv

from funnelpulse import Pipeline, generate_events, tables, write_events
from funnelpulse.config import load_settings
from funnelpulse.engines.spark_session import (
    LOCAL_MAX_MB,
    LOCAL_MIN_MB,
    LOCAL_SHARE,
    SparkConfig,
    local_driver_mb,
    machine_memory_mb,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray FUNNELPULSE_* variable or ./funnelpulse.toml may leak into a test."""
    for name in list(os.environ):
        if name.startswith("FUNNELPULSE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# --- settings: no JVM ----------------------------------------------------------------------------


def test_local_driver_is_sized_from_the_machine_unless_configured() -> None:
    machine = machine_memory_mb()
    expected = int(min(max(machine * LOCAL_SHARE, LOCAL_MIN_MB), LOCAL_MAX_MB))
    assert local_driver_mb() == expected
    assert SparkConfig("local[2]").session_conf()["spark.driver.memory"] == f"{expected}m"
    # configured: the value given, as Spark writes it
    assert SparkConfig("local[2]", driver_memory="3G").session_conf()["spark.driver.memory"] == "3g"
    # on a cluster the driver is the cluster manager's unless configured
    assert "spark.driver.memory" not in SparkConfig("yarn").session_conf()
    assert SparkConfig("yarn", executor_memory="6g").session_conf()["spark.executor.memory"] == "6g"


def test_spark_section_env_and_conf_flags_in_order(tmp_path: Path) -> None:
    path = tmp_path / "funnelpulse.toml"
    path.write_text(
        '[funnelpulse]\nengine = "spark"\n'
        '[spark]\nmaster = "local[3]"\ndriver_memory = "2g"\nexecutor_memory = "3g"\n'
        '[spark.conf]\n"spark.sql.shuffle.partitions" = 5\n"spark.memory.fraction" = 0.5\n'
    )
    settings = load_settings(path)
    conf = SparkConfig.from_settings(settings).session_conf()
    assert settings.spark_master == "local[3]"
    assert conf["spark.driver.memory"] == "2g"
    assert conf["spark.executor.memory"] == "3g"
    assert conf["spark.sql.shuffle.partitions"] == "5"  # an explicit spark.* key wins
    assert conf["spark.memory.fraction"] == "0.5"
    assert conf["spark.sql.session.timeZone"] == "UTC"  # what results depend on stays
    os.environ["FUNNELPULSE_SPARK_DRIVER_MEMORY"] = "4g"
    os.environ["FUNNELPULSE_SPARK_CONF"] = "spark.memory.fraction=0.4,spark.a.b=x"
    try:
        settings = load_settings(path, spark_conf=(("spark.driver.memory", "5g"),))
    finally:
        del os.environ["FUNNELPULSE_SPARK_DRIVER_MEMORY"], os.environ["FUNNELPULSE_SPARK_CONF"]
    assert settings.spark_driver_memory == "4g"
    conf = SparkConfig.from_settings(settings).session_conf()
    # --conf adds to the environment's conf; its spark.driver.memory wins over driver_memory
    assert conf["spark.driver.memory"] == "5g"
    assert conf["spark.memory.fraction"] == "0.4"
    assert conf["spark.a.b"] == "x"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('[spark]\ndriver_memory = "lots"', 'size such as "512m"'),
        ("[spark]\ndriver_memory = 4", "in quotes"),
        ('[spark]\ndrivermemory = "4g"', 'did you mean "driver_memory"'),
        ('[spark.conf]\n"sql.shuffle.partitions" = 4', "must start with spark."),
        ("[spark]\nconf = 3", "[spark.conf]"),
    ],
)
def test_bad_spark_settings_are_refused_before_any_work(
    tmp_path: Path, text: str, why: str
) -> None:
    (tmp_path / "funnelpulse.toml").write_text(text + "\n")
    done = fp("--warehouse", str(tmp_path / "wh"), "build", "--engine", "spark")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: ") and why in done.stderr, done.stderr
    assert not (tmp_path / "wh").exists()


def test_a_bad_conf_flag_is_a_usage_error(tmp_path: Path) -> None:
    for flag in ("spark.driver.memory", "driver.memory=4g"):
        done = fp("--warehouse", str(tmp_path / "wh"), "build", "--engine", "spark", "--conf", flag)
        assert done.returncode == 2, done.stderr
        assert "Error: " in done.stderr and "--conf" in done.stderr
        assert "Traceback" not in done.stderr


def _fake_java(folder: Path, version_line: str) -> Path:
    """A JAVA_HOME whose bin/java reports `version_line`, as `java -version` does (on stderr)."""
    java = folder / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\nexit 0\n")
    java.chmod(0o755)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("home", "why"),
    [
        (None, "has no bin/java"),
        ('openjdk version "11.0.21" 2023-10-17', "is Java 11"),
        ('java version "1.8.0_392"', "is Java 8"),
    ],
)
def test_missing_or_old_java_is_an_error_naming_the_fix(
    tmp_path: Path, home: str | None, why: str
) -> None:
    java_home = tmp_path / "jdk"
    if home is not None:
        _fake_java(java_home, home)
    wh = tmp_path / "wh"
    Pipeline(warehouse=str(wh)).ingest(
        [write_csv(tmp_path / "a.csv", [row("2019-10-01 00:00:00")])]
    )
    before = tables.version(str(wh / tables.BRONZE))
    done = fp(
        "--warehouse", str(wh), "ingest", "--engine", "spark", str(tmp_path / "a.csv"),
        env={"JAVA_HOME": str(java_home)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: Spark needs Java") and why in error, error
    assert "set JAVA_HOME" in error
    assert tables.version(str(wh / tables.BRONZE)) == before


# --- runs on a real JVM ----------------------------------------------------------------------------

spark_run = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1M events (116 MB of CSV): held as rows, more than a 512 MB driver heap can keep."""
    path = tmp_path_factory.mktemp("big") / "events.csv"
    return write_events(generate_events(1_000_000, seed=3, days=10, brands=200), path)


def _seeded(tmp_path: Path) -> tuple[Path, dict[str, int | None]]:
    """A warehouse with one small ingest and build: the versions a failed step must leave."""
    wh = tmp_path / "wh"
    p = Pipeline(warehouse=str(wh))
    p.ingest([write_events(generate_events(2_000, seed=1, days=2), tmp_path / "small.csv")])
    p.build()
    names = (tables.BRONZE, tables.QUARANTINE, tables.SILVER, tables.GOLD_HOURLY_BRAND)
    return wh, {n: tables.version(str(wh / n)) for n in names}


def _versions(wh: Path, names: dict[str, int | None]) -> dict[str, int | None]:
    return {n: tables.version(str(wh / n)) for n in names}


@pytest.mark.spark
@pytest.mark.slow
def test_ingest_and_build_of_a_big_file_under_a_512m_driver_equal_duckdb(
    big_csv: Path, tmp_path: Path
) -> None:
    """The driver heap is capped at 512 MB (local[2]: every task runs in it); the file's rows
    would not fit in it, yet ingest and build finish and equal the DuckDB engine's tables."""
    (tmp_path / "funnelpulse.toml").write_text(
        '[spark]\nmaster = "local[2]"\ndriver_memory = "1g"\n'
    )
    wh = str(tmp_path / "spark")
    cap = ("--conf", "spark.driver.memory=512m")  # the flag wins over the file's driver_memory
    done = fp("--log-level", "INFO", "--warehouse", wh, "ingest", "--engine", "spark", *cap,
              str(big_csv), timeout=3600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting Spark (local[2], driver memory 512m)" in " ".join(done.stderr.split())
    assert "(JVM heap 512 MB)" in done.stderr  # the cap reached the JVM itself
    done = fp("--warehouse", wh, "build", "--engine", "spark", *cap, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    duck = Pipeline(warehouse=str(tmp_path / "duck"))
    duck.ingest([big_csv])
    duck.build()
    spark = Pipeline(warehouse=wh)
    assert spark.table(tables.BRONZE).num_rows == 1_000_000
    for name in (tables.SILVER, tables.GOLD_HOURLY_BRAND, tables.GOLD_DAILY_CATEGORY):
        assert spark.table(name).num_rows == duck.table(name).num_rows, name
    totals = ("views", "carts", "purchases")
    for name in (tables.GOLD_HOURLY_BRAND, tables.GOLD_DAILY_BRAND):
        a, b = duck.table(name), spark.table(name)
        for column in totals:
            assert sum(a.column(column).to_pylist()) == sum(b.column(column).to_pylist())
    assert spark.report()["funnel"] == duck.report()["funnel"]


@pytest.mark.spark
@pytest.mark.slow
def test_a_driver_out_of_memory_is_an_error_naming_the_setting(
    big_csv: Path, tmp_path: Path
) -> None:
    """A driver far too small for the step: one `Error:` naming the memory and the setting,
    exit 1, every table at its previous version. (spark.testing.memory only lets Spark start
    with a 96 MB heap; the memory that runs out is real.)"""
    wh, before = _seeded(tmp_path)
    done = fp(
        "--warehouse", str(wh), "ingest", "--engine", "spark", "--master", "local[2]",
        "--conf", "spark.testing.memory=2147483648", str(big_csv),
        env={"FUNNELPULSE_SPARK_DRIVER_MEMORY": "96m"}, timeout=3600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: Spark ran out of memory"), error
    assert "(96m)" in error and "driver_memory" in error and "spark.driver.memory" in error
    assert "Traceback" not in done.stderr and "at org.apache" not in done.stderr
    assert _versions(wh, before) == before


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def _java_under(pid: int, marker: str) -> list[int]:
    """Java processes below `pid` whose command line holds `marker`."""
    out, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        todo += _children(child)
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "java" in command and marker in command:
            out.append(child)
    return out


@pytest.mark.spark
@pytest.mark.slow
def test_a_killed_jvm_is_an_error_and_the_ingest_is_undone(big_csv: Path, tmp_path: Path) -> None:
    """kill -9 of Spark's JVM while ingest writes its tables: `Error:`, exit 1, tables at their
    previous versions (the journaled step is undone)."""
    wh, before = _seeded(tmp_path)
    pending = wh / "_funnelpulse" / "pending"
    command = [sys.executable, "-m", "funnelpulse", "--warehouse", str(wh), "ingest",
               "--engine", "spark", "--master", "local[2]", str(big_csv)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    deadline = time.monotonic() + 1500
    while proc.poll() is None and time.monotonic() < deadline:
        if not killed and pending.is_dir() and any(pending.glob("ingest-*.json")):
            for pid in _java_under(proc.pid, "org.apache.spark.deploy.SparkSubmit"):
                os.kill(pid, signal.SIGKILL)
                killed = True
        time.sleep(0.1)
    _, stderr = proc.communicate(timeout=300)
    assert killed, stderr[-2000:]
    assert proc.returncode == 1, stderr[-3000:]
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("Error: Spark's Java process was killed by signal 9"), error
    assert "Nothing was committed" in error
    assert _versions(wh, before) == before
    assert not any(pending.glob("*.json"))


ACTIVE_SESSION = """
from pyspark.sql import SparkSession
from funnelpulse.engines.spark_session import SparkConfig, using_spark

session = (
    SparkSession.builder.master("local[1]")
    .config("spark.driver.memory", "700m")
    .config("spark.sql.shuffle.partitions", "5")
    .getOrCreate()
)
said = []

class Recorder:
    def step(self, message):
        said.append(message)

ours = SparkConfig("local[2]", 8, driver_memory="3g")
with using_spark(ours, Recorder()) as spark:
    assert spark is session
    print("PARTITIONS", spark.conf.get("spark.sql.shuffle.partitions"))
    print("ZONE", spark.conf.get("spark.sql.session.timeZone"))
print("SAID", said)
"""


@pytest.mark.spark
@pytest.mark.slow
def test_an_active_session_keeps_its_own_settings_and_the_progress_line_shows_them() -> None:
    """Under spark-submit or a notebook the session's own master, memory and shuffle partitions
    win over funnelpulse's settings, and the progress line says which ones run."""
    done = subprocess.run(
        [sys.executable, "-c", ACTIVE_SESSION], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "PARTITIONS 5" in out  # the session's, not funnelpulse's 8
    assert "ZONE UTC" in out  # what results depend on is still set
    said = next(line for line in out.splitlines() if line.startswith("SAID"))
    assert (
        "Using the active Spark session (local[1], driver memory 700m, 5 shuffle partitions)"
        in said
    )
    assert "Starting Spark" not in said and "3g" not in said
