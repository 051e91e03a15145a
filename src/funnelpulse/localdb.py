"""The in-process SQL connection (DuckDB, a core dependency) that reads the warehouse for the
report, dashboard, detection and stream, whichever engine built it: set up the same way everywhere
(UTC session, no progress bar). Engine choice lives in engines/; this is not one."""

from __future__ import annotations

import duckdb


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # Dates and hours are UTC whatever the machine's zone; the raw text says UTC.
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar=false")
    if threads:
        con.execute(f"SET threads={int(threads)}")
    return con
