"""Shared fixtures: real warehouses in tmp_path, tiny hand-made raw files, the bundled real sample."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from funnelpulse import Pipeline, tables
from funnelpulse.ingest import RAW_COLUMNS
from funnelpulse.pipeline import sample_files

HEADER = ",".join(RAW_COLUMNS)
# A test's files are complete when the stream starts: the default settle time (10 s) would only
# slow the suite down. Tests of the landing rule set their own.
os.environ.setdefault("FUNNELPULSE_SETTLE_S", "0.3")


def row(
    ts: str,
    etype: str = "view",
    product: int = 1,
    brand: str = "acme",
    price: str = "5.00",
    user: int = 10,
    session: str = "s1",
    category_code: str = "",
    category_id: int = 7,
) -> str:
    return (
        f"{ts} UTC,{etype},{product},{category_id},{category_code},{brand},{price},{user},{session}"
    )


def write_csv(path: Path, lines: list[str], header: bool = True) -> Path:
    path.write_text("\n".join(([HEADER] if header else []) + lines) + "\n")
    return path


# --- streams (tests/test_stream.py: Spark, tests/test_stream_embedded.py: embedded) -------------


def fp(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m funnelpulse ARGS` as its own process (a stream is killed, signalled, restarted)."""
    return subprocess.run(
        [sys.executable, "-m", "funnelpulse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def cli(
    warehouse: Path,
    *args: str,
    kill_at: str | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`funnelpulse --quiet --warehouse WAREHOUSE ARGS` as its own process, with `env` added to
    the environment; `kill_at` names the fault checkpoint (faults.py) where it kills itself."""
    env = {**{k: v for k, v in os.environ.items() if k != "FUNNELPULSE_KILL_AT"}, **(env or {})}
    if kill_at:
        env["FUNNELPULSE_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "funnelpulse", "--quiet", "--warehouse", str(warehouse), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def assert_live_equals_batch(p: Pipeline) -> None:
    """Each live hour of a brand equals the batch build's, and is final once 2 h behind the newest
    event."""
    batch = {
        (r["window_start"], r["brand"]): r for r in p.table(tables.GOLD_HOURLY_BRAND).to_pylist()
    }
    live = p.table(tables.GOLD_STREAM).to_pylist()
    assert len(live) == len(batch)
    for r in live:
        b = batch[(r["window_start"], r["brand"])]
        assert (r["views"], r["carts"], r["purchases"]) == (b["views"], b["carts"], b["purchases"])
        assert abs(r["revenue"] - b["revenue"]) < 1e-6
        assert r["conversion_rate"] == b["conversion_rate"]
    latest = max(r["last_event_at"] for r in live)
    for r in live:
        assert r["is_final"] == (r["window_end"] <= latest - timedelta(hours=2))


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """A Kafka-protocol broker (tansu, in memory) for the tests of one module."""
    from funnelpulse.streaming.broker import local_broker

    with local_broker() as bootstrap:
        yield bootstrap


def sasl_config(folder: Path) -> tuple[Path, dict[str, str]]:
    """A config file whose [kafka] table asks for SASL (the bundled broker has none), and the
    environment holding its password (TopSecret42, which no output may show)."""
    config = folder / "sasl.toml"
    config.write_text(
        '[kafka]\nsecurity.protocol = "SASL_PLAINTEXT"\nsasl.mechanism = "PLAIN"\n'
        'sasl.username = "fp"\n'
    )
    return config, {"FUNNELPULSE_KAFKA_SASL_PASSWORD": "TopSecret42"}


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline(warehouse=str(tmp_path / "warehouse"))


@pytest.fixture(scope="session")
def real_sample() -> list[Path]:
    files = sample_files()
    assert len(files) == 2, files
    return files


@pytest.fixture(scope="session")
def _sample_built(tmp_path_factory: pytest.TempPathFactory, real_sample: list[Path]) -> Path:
    """The real sample ingested and built once per worker: only ever copied, never handed out,
    so no test sees another's writes."""
    p = Pipeline(warehouse=str(tmp_path_factory.mktemp("sample") / "warehouse"))
    p.ingest(real_sample)
    p.build()
    return Path(p.warehouse)


def sample_copy(template: Path, folder: Path) -> Pipeline:
    """A warehouse of its own holding the built real sample (a copy of the worker's one build)."""
    shutil.copytree(template, folder / "warehouse")
    return Pipeline(warehouse=str(folder / "warehouse"))


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory, _sample_built: Path) -> Pipeline:
    return sample_copy(_sample_built, tmp_path_factory.mktemp("demo"))


@pytest.fixture
def new_york_tz() -> Iterator[None]:
    """Run with the machine in a zone far from UTC (with DST), to prove results stay UTC."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture(scope="session")
def shared_spark() -> Iterator[Any]:
    """One local Spark session for the whole run: the engine finds it active and reuses it."""
    from funnelpulse.engines.spark import SparkConfig, spark_session

    # A fixed heap rather than half the machine's: test data is small and the machine is shared.
    session = spark_session(config=SparkConfig("local[2]", driver_memory="2g"))
    yield session
    session.stop()
