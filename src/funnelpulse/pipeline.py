"""The Python API the CLI and the dashboard both call."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import report, tables
from .config import Settings, load_settings
from .console import Progress, SilentProgress
from .engines import get_engine
from .engines.base import BuildResult, DateRange
from .ingest import IngestResult, ingest


def sample_files() -> list[Path]:
    """The bundled real REES46 cosmetics samples (see sample/SOURCES.md for credit)."""
    folder = resources.files("funnelpulse.sample")
    return sorted(Path(str(folder.joinpath(n.name))) for n in folder.iterdir() if n.name.endswith(".csv.gz"))


class Pipeline:
    """A warehouse and the steps that fill it: ingest -> build -> detect -> report."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        progress: Progress | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings or load_settings(**overrides)
        self.progress = progress or SilentProgress()

    @property
    def warehouse(self) -> str:
        return self.settings.warehouse_path

    def ingest(self, paths: Iterable[str | Path]) -> IngestResult:
        return ingest(self.warehouse, [Path(p) for p in paths], self.progress)

    def build(
        self, since: date | None = None, until: date | None = None, engine: str | None = None
    ) -> BuildResult:
        options: dict[str, Any] = {}
        name = engine or self.settings.engine
        if name == "spark":
            options = {
                "master": self.settings.spark_master,
                "shuffle_partitions": self.settings.shuffle_partitions,
            }
        return get_engine(name, **options).build(self.warehouse, DateRange(since, until), self.progress)

    def report(self, top: int = 5) -> dict[str, Any]:
        return report.summary(self.warehouse, top)

    def table(self, name: str) -> pa.Table:
        return tables.read(tables.table_path(self.warehouse, name))

    def demo(self) -> dict[str, Any]:
        """Ingest the bundled real sample, build every table and return the report."""
        self.ingest(sample_files())
        self.build()
        return self.report()
