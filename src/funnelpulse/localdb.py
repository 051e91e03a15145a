"""The in-process SQL connection (DuckDB, a core dependency) that reads the warehouse for the
report, dashboard, detection and stream, whichever engine built it: set up the same way everywhere
(UTC session, no progress bar). Engine choice lives in engines/; this is not one."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar

import duckdb

from .errors import FunnelPulseError


class Interrupter:
    """The connections one piece of work opened, so another thread can stop its queries (an
    HTTP request past its timeout): each running query ends at once with an interrupt error."""

    def __init__(self) -> None:
        self._connections: list[duckdb.DuckDBPyConnection] = []
        self._guard = threading.Lock()
        self.interrupted = False

    def add(self, con: duckdb.DuckDBPyConnection) -> None:
        with self._guard:
            self._connections.append(con)
            stopped = self.interrupted
        if stopped:  # opened after the interrupt: stop it before it starts
            con.interrupt()

    def interrupt(self) -> None:
        with self._guard:
            self.interrupted = True
            connections = list(self._connections)
        for con in connections:
            with suppress(duckdb.Error):  # already closed: nothing runs on it
                con.interrupt()


_interrupter: ContextVar[Interrupter | None] = ContextVar("interrupter", default=None)


@contextmanager
def interruptible(interrupter: Interrupter) -> Iterator[Interrupter]:
    """Connections opened (by `connect` or `track`) inside this block join `interrupter`."""
    token = _interrupter.set(interrupter)
    try:
        yield interrupter
    finally:
        _interrupter.reset(token)


def track(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """`con` joins the current interruptible block, if any."""
    interrupter = _interrupter.get()
    if interrupter is not None:
        interrupter.add(con)
    return con


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = track(duckdb.connect())
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


def register_table(con: duckdb.DuckDBPyConnection, name: str, dataset: object) -> None:
    """Expose a table's Arrow dataset (tables.dataset) as view `name`.

    A local table whose partitions are dates is read by DuckDB's own Parquet reader from the
    dataset's file list: the same rows and types, with less work per row than scanning it
    through Arrow. Anything else (object stores, no files yet) is scanned through Arrow."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from pyarrow import fs

    files = list(getattr(dataset, "files", None) or [])
    local = isinstance(getattr(dataset, "filesystem", None), fs.LocalFileSystem)
    partitioning = getattr(dataset, "partitioning", None)
    keys = list(partitioning.schema) if partitioning is not None else []
    if not (files and local and all(pa.types.is_date32(f.type) for f in keys)):
        con.register(name, dataset)
        return
    assert isinstance(dataset, ds.FileSystemDataset)
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    types = ", ".join(f"'{f.name}': DATE" for f in keys)
    hive = f", hive_partitioning = true, hive_types = {{{types}}}" if keys else ""
    columns = ", ".join(f'"{c}"' for c in dataset.schema.names)
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {columns} "
            f"FROM read_parquet([{listed}], union_by_name = true{hive})"
        )
    except duckdb.Error:  # e.g. a column of the table that no file has yet: Arrow fills it
        con.register(name, dataset)
