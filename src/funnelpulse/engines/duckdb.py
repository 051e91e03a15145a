"""The default engine: the SQL models run in-process on DuckDB over the Delta tables.

Bronze is processed in chunks of whole dates (the dedup key contains event_time, so a date
never needs another date's rows). Memory stays bounded by the chunk, not the table, and every
table still gets exactly one Delta commit: the chunks stream into one writer.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from .. import faults, tables
from ..console import Progress
from ..errors import WarehouseError
from ..localdb import connect, register_table
from .base import (
    GOLD_MODELS,
    SILVER_MODEL,
    BuildResult,
    DateRange,
    StreamOptions,
    covered_dates,
    rows_per_date,
)

if TYPE_CHECKING:
    import duckdb

    from ..config import Settings
    from ..ingest import IngestResult
    from ..streaming.windows import StreamResult

CHUNK_ROWS = 4_000_000


class DuckDBEngine:
    name = "duckdb"
    ingests_files_together = False

    def __init__(
        self, chunk_rows: int = CHUNK_ROWS, funnel_memory_mb: int = 1536, max_future_s: int = 3600
    ) -> None:
        self.chunk_rows = chunk_rows
        self.funnel_memory_mb = funnel_memory_mb
        self.max_future_s = max_future_s

    @classmethod
    def from_settings(cls, settings: Settings) -> DuckDBEngine:
        return cls(funnel_memory_mb=settings.funnel_memory_mb, max_future_s=settings.max_future_s)

    def ingest(self, warehouse: str, paths: list[str | Path], progress: Progress) -> IngestResult:
        from functools import partial

        from ..warehouse import ingest
        from .duckdb_ingest import read_file

        return ingest(
            warehouse, paths, progress, partial(read_file, max_future_s=self.max_future_s)
        )

    def stream(
        self, warehouse: str, settings: Settings, source: str, options: StreamOptions
    ) -> StreamResult:
        """The embedded engine: micro-batches judged by DuckDB, no JVM."""
        from ..streaming.engine import DEFAULT_TRIGGER_S, run_embedded

        return run_embedded(
            warehouse,
            settings,
            source,
            until_idle_s=options.until_idle_s,
            trigger_s=options.trigger_s or DEFAULT_TRIGGER_S,
            checkpoint_dir=options.checkpoint,
            max_rows=options.max_rows,
            broker_timeout_s=options.broker_timeout_s,
            kafka_options=options.kafka_options,
            alert_sinks=options.alert_sinks,
            repair=options.repair,
        )

    def load_cube(
        self,
        con: duckdb.DuckDBPyConnection,
        silver: str,
        first: date | None,
        progress: Progress,
        dates: list[date] | None = None,
    ) -> None:
        from ..anomaly.series import CUBE_SQL

        con.register("silver_all", tables.dataset(silver))
        where = [f"event_date >= DATE '{first.isoformat()}'"] if first else []
        if dates is not None:
            listed = ", ".join(f"DATE '{d.isoformat()}'" for d in dates) or "NULL"
            where.append(f"event_date IN ({listed})")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        con.execute(f"CREATE OR REPLACE VIEW silver_events AS SELECT * FROM silver_all {clause}")
        con.execute(CUBE_SQL)

    def build(self, warehouse: str, dates: DateRange, progress: Progress) -> BuildResult:
        bronze_path = tables.table_path(warehouse, tables.BRONZE)
        if not tables.exists(bronze_path):
            raise WarehouseError(
                f"No bronze_events table in {warehouse}. Run `funnelpulse ingest FILE...` first"
            )
        bronze = tables.dataset(bronze_path)
        sizes = rows_per_date(bronze, dates)
        # With nothing to build, one empty chunk still gives every table its schema.
        chunks = _chunks(sizes, self.chunk_rows) or [[]]
        result = BuildResult(engine=self.name, dates=sorted(sizes))
        replace_dates = None if dates.is_all else covered_dates(dates, sorted(sizes))
        con = connect()
        try:
            register_table(con, "bronze_all", bronze)
            gold: dict[str, list[pa.Table]] = {m.name: [] for m in GOLD_MODELS}
            silver_schema = (
                con.sql(
                    f"SELECT * FROM ({SILVER_MODEL.sql.replace('FROM bronze_events', 'FROM bronze_all')}) LIMIT 0"
                )
                .to_arrow_table()
                .schema
            )

            def silver_batches() -> Iterator[pa.RecordBatch]:
                for i, chunk in enumerate(chunks, 1):
                    if chunk:
                        label = (
                            f"{chunk[0]}..{chunk[-1]}"
                            if dates.only is None
                            else f"{len(chunk)} date(s) from {chunk[0]} to {chunk[-1]}"
                        )
                        progress.step(
                            f"Building silver and gold for {label} (chunk {i}/{len(chunks)})"
                        )
                    yield from self._chunk(con, chunk, gold)

            result.rows[SILVER_MODEL.name] = tables.write(
                tables.table_path(warehouse, SILVER_MODEL.name),
                pa.RecordBatchReader.from_batches(silver_schema, silver_batches()),
                partition_by=[SILVER_MODEL.partition_by],
                replace=_replace(SILVER_MODEL.partition_by, replace_dates),
            )
            faults.checkpoint("build.silver_committed")
            progress.step("Writing gold tables")
            for model in GOLD_MODELS:
                data = pa.concat_tables(gold[model.name]).combine_chunks()
                result.rows[model.name] = tables.write(
                    tables.table_path(warehouse, model.name),
                    data,
                    partition_by=[model.partition_by],
                    replace=_replace(model.partition_by, replace_dates),
                )
                faults.checkpoint("build.gold_committed")
        finally:
            con.close()
        # Session funnels follow sessions across chunk (date) edges, so they read the new silver.
        from ..funnel import build_gold_duckdb

        memory = self.funnel_memory_mb or None
        result.rows.update(build_gold_duckdb(warehouse, dates, progress, memory))
        return result

    @staticmethod
    def _chunk(con, chunk: list[date], gold: dict[str, list[pa.Table]]) -> Iterator[pa.RecordBatch]:  # type: ignore[no-untyped-def]
        listed = ", ".join(f"DATE '{d.isoformat()}'" for d in chunk) or "NULL"
        con.execute(
            f"CREATE OR REPLACE VIEW bronze_events AS SELECT * FROM bronze_all WHERE event_date IN ({listed})"
        )
        # Sorted by partition so the writer fills each date's files in one go (2x faster writes).
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE silver_events AS SELECT * FROM ({SILVER_MODEL.sql}) ORDER BY event_date"
        )
        for model in GOLD_MODELS:
            gold[model.name].append(con.sql(model.sql).to_arrow_table())
        yield from con.sql("SELECT * FROM silver_events").to_arrow_reader(1 << 20)
        con.execute("DROP TABLE silver_events")


def _chunks(sizes: dict[date, int], limit: int) -> list[list[date]]:
    chunks: list[list[date]] = []
    current: list[date] = []
    total = 0
    for day in sorted(sizes):
        if current and total + sizes[day] > limit:
            chunks.append(current)
            current, total = [], 0
        current.append(day)
        total += sizes[day]
    if current:
        chunks.append(current)
    return chunks


def _replace(column: str, covered: frozenset[str] | None) -> tables.Partitions | None:
    return None if covered is None else tables.Partitions(column, covered)
