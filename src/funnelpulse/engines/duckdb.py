"""The default engine: the SQL models run in-process on DuckDB over the Delta tables."""

from __future__ import annotations

from datetime import date, timedelta

from .. import tables
from ..console import Progress
from ..errors import WarehouseError
from .base import GOLD_MODELS, SILVER_MODEL, BuildResult, DateRange
from .duckdb_conn import connect


class DuckDBEngine:
    name = "duckdb"

    def build(self, warehouse: str, dates: DateRange, progress: Progress) -> BuildResult:
        bronze_path = tables.table_path(warehouse, tables.BRONZE)
        if not tables.exists(bronze_path):
            raise WarehouseError(
                f"No bronze_events table in {warehouse}. Run `funnelpulse ingest FILE...` first"
            )
        con = connect()
        try:
            return self._build(con, warehouse, bronze_path, dates, progress)
        finally:
            con.close()

    def _build(self, con, warehouse, bronze_path, dates, progress) -> BuildResult:  # type: ignore[no-untyped-def]
        con.register("bronze_all", tables.dataset(bronze_path))
        where = []
        if dates.since:
            where.append(f"event_date >= DATE '{dates.since.isoformat()}'")
        if dates.until:
            where.append(f"event_date <= DATE '{dates.until.isoformat()}'")
        con.execute(
            "CREATE VIEW bronze_events AS SELECT * FROM bronze_all"
            + (f" WHERE {' AND '.join(where)}" if where else "")
        )
        progress.step("Building silver_events")
        # Sorted by partition so the writer fills each date's files in one go (2x faster writes).
        con.execute(
            f"CREATE TEMP TABLE silver_events AS SELECT * FROM ({SILVER_MODEL.sql}) ORDER BY event_date"
        )
        present = [
            r[0]
            for r in con.execute("SELECT DISTINCT event_date FROM bronze_events ORDER BY 1").fetchall()
        ]
        result = BuildResult(engine=self.name, dates=present)
        replace = None if dates.is_all else _covered(dates, present)
        silver = con.sql("SELECT * FROM silver_events").to_arrow_reader(500_000)
        progress.step("Writing silver_events")
        result.rows[SILVER_MODEL.name] = tables.write(
            tables.table_path(warehouse, SILVER_MODEL.name),
            silver,
            partition_by=[SILVER_MODEL.partition_by],
            replace=replace if replace is None else tables.Partitions("event_date", replace),
        )
        for model in GOLD_MODELS:
            progress.step(f"Building {model.name}")
            data = con.sql(model.sql).to_arrow_table()
            result.rows[model.name] = tables.write(
                tables.table_path(warehouse, model.name),
                data,
                partition_by=[model.partition_by],
                replace=replace if replace is None else tables.Partitions(model.partition_by, replace),
            )
        return result


def _covered(dates: DateRange, present: list[date]) -> frozenset[str]:
    """Every date partition the range covers, including ones that now have no rows."""
    if dates.since and dates.until:
        days = (dates.until - dates.since).days
        return frozenset((dates.since + timedelta(d)).isoformat() for d in range(days + 1))
    known = {d.isoformat() for d in present}
    bound = [d for d in present if dates.contains(d)]
    return frozenset(known & {d.isoformat() for d in bound}) | frozenset(
        d.isoformat() for d in (dates.since, dates.until) if d
    )
