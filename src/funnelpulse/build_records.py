"""The build record: which bronze_events each successful build consumed (the table's id, version
and row count), so that a later build can refuse a bronze that lost rows no commit removed.

Without it, a bronze that reads smaller than it should (its log rewound to an old version, a
table recreated from fewer files, the wrong folder) is rebuilt into silver and gold and the
lost rows silently leave every table. The record is one small table, `build_records`, written by
the build job inside its journal (warehouse.build): a build that dies before the record is
written is finished by the next command, which writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from . import tables
from .errors import WarehouseError

BUILD_RECORDS = "build_records"
KEEP = 200  # records kept: the newest decides, older ones are history for people

SCHEMA = pa.schema(
    [
        ("finished_at", pa.timestamp("us", "UTC")),
        ("engine", pa.string()),
        ("since", pa.date32()),
        ("until", pa.date32()),
        ("bronze_id", pa.string()),
        ("bronze_version", pa.int64()),
        ("bronze_rows", pa.int64()),
    ]
)


@dataclass(frozen=True)
class BronzeState:
    """bronze_events as a build reads it."""

    table_id: str
    version: int
    rows: int


def bronze_state(warehouse: str) -> BronzeState | None:
    """bronze_events' identity, version and rows now (None when there is no bronze table)."""
    path = tables.table_path(warehouse, tables.BRONZE)
    if not tables.is_delta(path):
        return None
    table = tables.open_table(path)
    return BronzeState(
        str(table.metadata().id), int(table.version()), tables.dataset(path).count_rows()
    )


def last(warehouse: str) -> dict[str, Any] | None:
    """The newest build record, or None before the first recorded build."""
    path = tables.table_path(warehouse, BUILD_RECORDS)
    if not tables.exists(path):
        return None
    rows = tables.read(path).sort_by([("finished_at", "descending")]).slice(0, 1).to_pylist()
    return rows[0] if rows else None


def append(
    warehouse: str, engine: str, since: date | None, until: date | None, bronze: BronzeState
) -> None:
    """Add the record of a build that just committed every table (the newest KEEP are kept)."""
    path = tables.table_path(warehouse, BUILD_RECORDS)
    old = tables.read(path).to_pylist() if tables.exists(path) else []
    new = {
        "finished_at": datetime.now(UTC),
        "engine": engine,
        "since": since,
        "until": until,
        "bronze_id": bronze.table_id,
        "bronze_version": bronze.version,
        "bronze_rows": bronze.rows,
    }
    kept = sorted(old, key=lambda r: r["finished_at"])[-(KEEP - 1) :] if old else []
    tables.write(path, pa.Table.from_pylist([*kept, new], schema=SCHEMA))


def rows_removed_since(warehouse: str, record: dict[str, Any], now: BronzeState) -> int | None:
    """Rows of the files the recorded bronze version held that later commits removed (a
    re-ingest replacing a file's rows); None when that version of the same table is gone."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    if record["bronze_id"] != now.table_id or record["bronze_version"] > now.version:
        return None
    path = tables.table_path(warehouse, tables.BRONZE)
    try:
        then = DeltaTable(tables.delta_location(path), version=int(record["bronze_version"]))
        current = tables.open_table(path)
        before = pa.table(then.get_add_actions(flatten=True)).select(["path", "num_records"])
        still = set(pa.table(current.get_add_actions(flatten=True)).column("path").to_pylist())
    except (DeltaError, OSError):
        return None
    return sum(
        int(n or 0)
        for p, n in zip(
            before.column("path").to_pylist(), before.column("num_records").to_pylist(), strict=True
        )
        if p not in still
    )


def check_bronze(warehouse: str, bronze: BronzeState | None, allow_shrink: bool = False) -> None:
    """Refuse to build from a bronze that lost rows since the last build without a commit
    removing them: it reads smaller than the last build's by more than the files removed."""
    record = last(warehouse)
    if record is None or bronze is None or allow_shrink:
        return
    before = int(record["bronze_rows"])
    if bronze.rows >= before:
        return
    removed = rows_removed_since(warehouse, record, bronze)
    if removed is not None and bronze.rows >= before - removed:
        return
    how = (
        f"changes since then removed only {removed:,}"
        if removed is not None
        else "the version it read is no longer in the table's history (the table was recreated "
        "or its log went back)"
    )
    raise WarehouseError(
        f"bronze_events has {bronze.rows:,} rows, but the last build read {before:,} (version "
        f"{record['bronze_version']}) and {how}. Building now would drop the missing rows from "
        "silver_events and every gold table, so nothing was changed. Check that --warehouse is "
        "the right folder, then re-ingest the raw files whose rows are missing with "
        "`funnelpulse ingest FILE...`; if the rows are gone on purpose, run "
        "`funnelpulse build --allow-shrink`"
    )
