"""The in-process SQL connection (DuckDB, a core dependency) that reads the warehouse for the
report, dashboard, detection and stream, whichever engine built it: set up the same way everywhere
(UTC session, no progress bar). Engine choice lives in engines/; this is not one."""

from __future__ import annotations

import os

import duckdb

from .errors import FunnelPulseError


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # Dates and hours are UTC whatever the machine's zone; the raw text says UTC.
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar=false")
    if threads:
        con.execute(f"SET threads={int(threads)}")
    return con


def file_path(path: str) -> str:
    """`path` for DuckDB's ATTACH, refused when it contains `?`: DuckDB cuts a database path at
    `?` to name the file's write-ahead log (`q?x/s.duckdb` -> `q.wal?x/s.duckdb`), even through a
    link (it resolves links), so that file could never be written."""
    if "?" in path:
        raise FunnelPulseError(
            f"The stream's checkpoint folder {os.path.dirname(path)} has a '?' in its path, "
            "where its state file cannot be kept. Give --checkpoint a folder without '?' "
            "(the checkpoint can live outside the warehouse)"
        )
    return path
