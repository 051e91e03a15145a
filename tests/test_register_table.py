"""localdb.register_table: DuckDB's own Parquet reader over a local table's files gives exactly the
rows and types of the Arrow scan it replaces, and falls back to the Arrow scan where it cannot."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa

from funnelpulse import tables
from funnelpulse.localdb import connect, register_table

SCHEMA = pa.schema(
    [
        ("event_time", pa.timestamp("us", "UTC")),
        ("user_session", pa.string()),
        ("price", pa.float64()),
        ("event_date", pa.date32()),
    ]
)


def _rows(n: int, day: int) -> pa.Table:
    return pa.table(
        {
            "event_time": [datetime(2019, 10, day, i % 24, tzinfo=UTC) for i in range(n)],
            "user_session": [None if i % 7 == 0 else f"s{i % 5}" for i in range(n)],
            "price": [float(i) / 3 for i in range(n)],
            "event_date": [date(2019, 10, day)] * n,
        },
        schema=SCHEMA,
    )


def _view(con, name: str) -> tuple[list[tuple[str, str]], list[tuple]]:  # type: ignore[no-untyped-def]
    kinds = [(r[0], r[1]) for r in con.sql(f"DESCRIBE {name}").fetchall()]
    rows = con.sql(f"SELECT * FROM {name} ORDER BY event_time, price").fetchall()
    return kinds, rows


def test_own_reader_equals_the_arrow_scan(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    tables.write(path, _rows(50, 1), partition_by=["event_date"])
    tables.write(  # a second commit adds a date
        path,
        _rows(30, 2),
        partition_by=["event_date"],
        replace=tables.Partitions("event_date", frozenset({"2019-10-02"})),
    )
    dataset = tables.dataset(path)
    con = connect()
    register_table(con, "own", dataset)
    con.register("arrow", dataset)
    plan = con.sql("EXPLAIN SELECT * FROM own").fetchall()[0][1]
    assert "READ_PARQUET" in plan.upper() or "PARQUET_SCAN" in plan.upper()
    own = _view(con, "own")
    assert own == _view(con, "arrow")
    assert len(own[1]) == 80
    assert ("event_date", "DATE") in own[0]
    con.close()


def test_a_column_no_file_has_falls_back_to_the_arrow_scan(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    tables.write(path, _rows(10, 1), partition_by=["event_date"])
    wider = SCHEMA.insert(2, pa.field("brand", pa.string()))
    files = tables.dataset(path).files
    import pyarrow.dataset as ds

    dataset = ds.dataset(
        files,
        schema=wider,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("event_date", pa.date32())]), flavor="hive"),
        partition_base_dir=path,
    )
    con = connect()
    register_table(con, "t", dataset)
    rows = con.sql("SELECT count(*), count(brand), min(event_date) FROM t").fetchall()
    assert rows == [(10, 0, date(2019, 10, 1))]
    con.close()
