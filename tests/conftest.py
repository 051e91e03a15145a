"""Shared fixtures: real warehouses in tmp_path, tiny hand-made raw files, the bundled real sample."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from funnelpulse import Pipeline
from funnelpulse.ingest import RAW_COLUMNS
from funnelpulse.pipeline import sample_files

HEADER = ",".join(RAW_COLUMNS)


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


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline(warehouse=str(tmp_path / "warehouse"))


@pytest.fixture(scope="session")
def real_sample() -> list[Path]:
    files = sample_files()
    assert len(files) == 2, files
    return files


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory, real_sample: list[Path]) -> Pipeline:
    p = Pipeline(warehouse=str(tmp_path_factory.mktemp("demo") / "warehouse"))
    p.ingest(real_sample)
    p.build()
    return p


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
    from funnelpulse.engines.spark import spark_session

    session = spark_session("local[2]")
    yield session
    session.stop()
