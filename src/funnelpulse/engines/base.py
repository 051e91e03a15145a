"""What every engine does: run the SQL models over bronze and write silver and gold."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow.dataset as ds

from .. import contract
from ..console import Progress

if TYPE_CHECKING:
    import duckdb

    from ..config import Settings
    from ..ingest import IngestResult
    from ..streaming.windows import StreamResult


@dataclass(frozen=True)
class Model:
    """One table built from one SQL file in DuckDB dialect."""

    name: str
    partition_by: str

    @property
    def template(self) -> str:
        """The model's SQL file as written, `{{ fragment }}` placeholders and all."""
        return resources.files("funnelpulse.models").joinpath(f"{self.name}.sql").read_text()

    @property
    def sql(self) -> str:
        """The model's SQL with the contract's fragments filled in."""
        return contract.render(self.template)


SILVER_MODEL = Model("silver_events", "event_date")
GOLD_MODELS = (
    Model("gold_funnel_hourly_brand", "window_date"),
    Model("gold_funnel_daily_brand", "date"),
    Model("gold_funnel_daily_category", "date"),
    Model("gold_funnel_hourly_price_band", "window_date"),
)
MODELS = (SILVER_MODEL, *GOLD_MODELS)


@dataclass(frozen=True)
class DateRange:
    """Inclusive UTC date range; None on a side means unbounded. With `only`, just those dates
    (an incremental build's explicit set; since/until are then its first and last)."""

    since: date | None = None
    until: date | None = None
    only: frozenset[date] | None = None

    @classmethod
    def of(cls, days: Iterable[date]) -> DateRange:
        """Exactly these dates (at least one)."""
        chosen = frozenset(days)
        return cls(min(chosen), max(chosen), chosen)

    @property
    def is_all(self) -> bool:
        return self.since is None and self.until is None

    def contains(self, day: date) -> bool:
        if self.only is not None:
            return day in self.only
        return (self.since is None or day >= self.since) and (
            self.until is None or day <= self.until
        )


@dataclass(frozen=True)
class StreamOptions:
    """How a stream runs, whichever engine runs it (None: the engine's own default)."""

    until_idle_s: float | None = None
    trigger_s: float | None = None
    checkpoint: str | None = None
    max_rows: int = 500_000
    broker_timeout_s: float = 60.0
    alert_sinks: list[str] | None = None
    kafka_options: dict[str, str] | None = None
    repair: bool = False  # start the live tables over from the source (embedded engine)


@dataclass
class BuildResult:
    engine: str
    rows: dict[str, int] = field(default_factory=dict)
    dates: list[date] = field(default_factory=list)


class Engine(Protocol):
    """What only an engine knows: how to ingest raw files, build the models, and aggregate
    silver into the hourly segment cube detection scores (sqlmesh's engine adapters)."""

    name: str
    # True when one call should take every file (a cluster job); else the caller goes file by file.
    ingests_files_together: bool

    def ingest(self, warehouse: str, paths: list[str | Path], progress: Progress) -> IngestResult:
        """Raw files -> bronze_events + quarantine_events, all-or-nothing per file."""
        ...

    def build(self, warehouse: str, dates: DateRange, progress: Progress) -> BuildResult:
        """bronze_events -> silver_events and the gold tables, for the dates in range."""
        ...

    def stream(
        self, warehouse: str, settings: Settings, source: str, options: StreamOptions
    ) -> StreamResult:
        """Keep the live table current from a Kafka topic or a folder, exactly once."""
        ...

    def load_cube(
        self,
        con: duckdb.DuckDBPyConnection,
        silver: str,
        first: date | None,
        progress: Progress,
        dates: list[date] | None = None,
    ) -> None:
        """Create the temp table `cube` (hour x brand x price band x category root counts) in
        `con` from silver_events on or after `first` (and, given `dates`, of those dates only)."""
        ...


def rows_per_date(bronze, dates: DateRange) -> dict[date, int]:  # type: ignore[no-untyped-def]
    """Rows per event_date, read from file metadata (no data scan)."""
    counts: dict[date, int] = {}
    for fragment in bronze.get_fragments():
        day = ds.get_partition_keys(fragment.partition_expression).get("event_date")
        if day is not None and dates.contains(day):
            counts[day] = counts.get(day, 0) + fragment.count_rows()
    return counts


def covered_dates(dates: DateRange, present: list[date]) -> frozenset[str]:
    """Every date partition the range covers, including ones that now have no rows."""
    if dates.only is not None:
        return frozenset(d.isoformat() for d in dates.only)
    low = dates.since or (min(present) if present else None)
    high = dates.until or (max(present) if present else None)
    if low is None or high is None:
        return frozenset()
    return frozenset((low + timedelta(d)).isoformat() for d in range((high - low).days + 1))
