"""The DuckDB engine's reading of one raw file: the file as a view of the nine raw columns as
text, the ingest's typing rules over it, good rows streamed to bronze and the rest quarantined.

DuckDB's errors are told apart here, by their type, so no module outside the engines sees one.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from .. import faults, tables
from ..console import Progress
from ..contract import BRONZE_SCHEMA, RAW_COLUMNS
from ..errors import FunnelPulseError, InputError
from ..ingest import (
    DEFAULT_MAX_FUTURE_S,
    FileResult,
    bronze_batches,
    file_kind,
    not_after,
    quarantine_rows,
    typed_sql,
)
from ..localdb import connect
from ..raw_lines import LineReader, RowCount, arrow_lines, raw_csv_sql

# DuckDB's Arrow stream carries an error as a plain Arrow error whose message starts with the
# DuckDB type's own tag ("Out of Memory Error: ..."): the tags of the types told apart below.
_STREAM_TAGS: dict[str, type[duckdb.Error]] = {
    "Out of Memory": duckdb.OutOfMemoryException,
    "IO": duckdb.IOException,
    "Invalid Input": duckdb.InvalidInputException,
    "Conversion": duckdb.ConversionException,
    "Out of Range": duckdb.OutOfRangeException,
    "INTERNAL": duckdb.InternalException,
}


class ReaderFailed(Exception):
    """Raised in place of whatever the DuckDB reader raised mid-stream, so that a failure of the
    reader is never confused with one of the table writer consuming it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def read_file(
    warehouse: str,
    path: Path,
    source: str,
    ingest_id: str,
    header: bool,
    progress: Progress,
    max_future_s: int = DEFAULT_MAX_FUTURE_S,
) -> FileResult:
    """Read one local raw file into bronze_events and quarantine_events (ingest_file journals it);
    events more than `max_future_s` ahead of the clock are quarantined."""
    con = connect()
    try:
        result = _read_with(
            con, warehouse, path, source, ingest_id, header, progress, not_after(max_future_s)
        )
    except BaseException:
        # Closing a connection whose result stream is still open raises its own "connection
        # is busy" error, which would hide the real one (e.g. a full disk): keep the real one.
        with contextlib.suppress(Exception):
            con.interrupt()
            con.close()
        raise
    con.close()
    return result


def _read_with(
    con: duckdb.DuckDBPyConnection,
    warehouse: str,
    path: Path,
    source: str,
    ingest_id: str,
    header: bool,
    progress: Progress,
    latest: datetime,
) -> FileResult:
    try:
        accounts = raw_view(con, path, header)
        reader = con.sql(typed_sql(latest=latest)).to_arrow_reader(256_000)
    except duckdb.Error as exc:
        raise read_error(path, exc) from exc
    bad: list[pa.RecordBatch] = []
    stream = pa.RecordBatchReader.from_batches(
        BRONZE_SCHEMA, bronze_batches(_guarded(reader), source, ingest_id, bad, accounts)
    )
    bronze_path = tables.table_path(warehouse, tables.BRONZE)
    # Replaces what an earlier ingest of this path, or of the same content elsewhere, produced.
    replace = (tables.SameValue("source_file", source), tables.SameValue("ingest_id", ingest_id))
    try:
        bronze_rows = tables.write(
            bronze_path, stream, partition_by=["event_date"], replace=replace
        )
    except ReaderFailed as exc:
        stream.close()
        reader.close()
        raise read_error(path, exc.error) from exc.error
    faults.checkpoint("ingest.bronze_committed")
    progress.step(f"Quarantining bad rows of {path.name}")
    quarantine = quarantine_rows(bad, source, ingest_id, header)
    tables.write(tables.table_path(warehouse, tables.QUARANTINE), quarantine, replace=replace)
    reasons = Counter(r.split(":")[0] for r in quarantine.column("reason").to_pylist())
    return FileResult(
        path=source if "://" in source else str(path),
        bronze_rows=bronze_rows,
        quarantined_rows=quarantine.num_rows,
        reasons=dict(reasons.most_common()),
    )


def _guarded(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The reader's batches; what the reader itself raises comes out as ReaderFailed."""
    batches = iter(reader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException, duckdb.Error) as exc:
            raise ReaderFailed(exc) from exc
        yield batch


def as_duckdb_error(exc: Exception) -> Exception:
    """DuckDB's error with its own type again when it reached us through the Arrow stream (which
    keeps only the message); any other error unchanged."""
    if isinstance(exc, duckdb.Error):
        return exc
    tag = str(exc).split(" Error: ", 1)[0] if " Error: " in str(exc) else ""
    kind = _STREAM_TAGS.get(tag)
    return kind(str(exc)) if kind else exc


def read_error(path: Path, exc: Exception) -> Exception:
    """What a user is told when DuckDB could not read `path`, chosen by the error's type."""
    exc = as_duckdb_error(exc)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    detail = first_line.split(" Error: ", 1)[-1]
    if isinstance(exc, duckdb.OutOfMemoryException):
        return FunnelPulseError(
            f"{path}: ran out of memory while reading it ({detail}). Free some memory or split "
            "the file, then ingest it again"
        )
    if isinstance(exc, duckdb.IOException):
        return InputError(
            f"{path}: cannot be read ({detail}). Check the file is complete and readable and "
            "that the disk has free space"
        )
    if isinstance(exc, (duckdb.InternalException, duckdb.FatalException)):
        return exc  # a bug, not the input: shown as an unexpected failure
    if isinstance(exc, duckdb.Error):
        return InputError(f"{path}: cannot be read as REES46 events ({detail})")
    return exc


def raw_view(con: duckdb.DuckDBPyConnection, path: Path, header: bool) -> LineReader | RowCount:
    """Expose the file as view `raw` with the nine raw columns as text; returns its accounts."""
    quoted = tables.sql_quote(str(path))
    if file_kind(path) == "csv":
        lines = LineReader(str(path), header)
        con.register("raw_lines", arrow_lines(lines))
        con.execute(f"CREATE OR REPLACE VIEW raw AS {raw_csv_sql('raw_lines')}")
        return lines
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    rows = pq.ParquetFile(path).metadata.num_rows
    if rows == 0:
        raise InputError(f"{path}: the Parquet file has no rows. Give a file with events")
    missing = [c for c in RAW_COLUMNS if c not in schema.names]
    if missing:
        raise InputError(
            f"{path}: Parquet file lacks the REES46 columns {', '.join(missing)}. "
            "Give events with the raw columns"
        )
    exprs = []
    for name in RAW_COLUMNS:
        kind = schema.field(name).type
        if pa.types.is_timestamp(kind):
            value = name if kind.tz else f"({name} AT TIME ZONE 'UTC')"
            # Sub-second digits only when there are any: the plain form is parsed fastest.
            exprs.append(
                f"strftime({value}, CASE WHEN epoch_us({value}) % 1000000 = 0 "
                f"THEN '%Y-%m-%d %H:%M:%S UTC' ELSE '%Y-%m-%d %H:%M:%S.%f UTC' END) AS {name}"
            )
        else:
            exprs.append(f"CAST({name} AS VARCHAR) AS {name}")
    # Parquet rows have no text lines: line_number is the row's position in the file.
    con.execute(
        f"""CREATE OR REPLACE VIEW raw AS
        SELECT {", ".join(exprs)}, file_row_number + 1 AS ordinal,
            NULL::VARCHAR AS reader_reason, NULL::VARCHAR AS raw_text
        FROM read_parquet({quoted}, file_row_number=true)"""
    )
    return RowCount(str(path), rows)
