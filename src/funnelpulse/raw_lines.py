"""Raw CSV text -> numbered lines, so that every physical line of an input file is accounted for.

The file is split into lines here, not by a CSV parser: a parser lets one stray double quote
swallow every following line into a single field. REES46 fields are never quoted, so a quote is
honoured only inside one line; a line whose quotes do not enclose whole fields goes to
quarantine whole. Line breaks are counted on the raw bytes, apart from the splitting, and an
ingest whose tables do not receive exactly the data lines counted refuses to commit.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import FunnelPulseError, InputError

ENCODING_REASON = (
    "invalid encoding: invalid unicode (byte sequence mismatch) detected. "
    "this file is not utf-8 encoded."
)
QUOTING_REASON = "bad quoting: a double quote that does not enclose a whole field"

# One field in double quotes ("" is a quote inside it), written so that no regex engine
# (Python, Java) recurses once per character.
QUOTED_FIELD = r'"[^"]*(?:""[^"]*)*"'
_QUOTED = re.compile(QUOTED_FIELD)

LINES_SCHEMA = pa.schema(
    [
        ("line", pa.large_string()),
        ("ordinal", pa.int64()),
        ("fields", pa.list_(pa.string())),
        ("reader_reason", pa.string()),
    ]
)
_BOM = b"\xef\xbb\xbf"


class AccountingError(FunnelPulseError):
    """The rows an ingest would commit do not match the lines read from its file."""


def split_quoted(line: str) -> list[str] | None:
    """The fields of a line holding double quotes, or None when a quote is not around a whole field.

    Commas split fields outside quotes; a field holding a quote must be quoted entirely.
    """
    fields: list[str] = []
    pos, end = 0, len(line)
    while True:
        if line.startswith('"', pos):
            match = _QUOTED.match(line, pos)
            if match is None:
                return None
            fields.append(match.group()[1:-1].replace('""', '"'))
            pos = match.end()
            if pos < end and line[pos] != ",":
                return None
        else:
            stop = line.find(",", pos)
            stop = end if stop < 0 else stop
            text = line[pos:stop]
            if '"' in text:
                return None
            fields.append(text)
            pos = stop
        if pos >= end:
            return fields
        pos += 1  # past the comma


@dataclass
class LineReader:
    """Streams one CSV file's lines as Arrow batches (schema LINES_SCHEMA) and counts them.

    `ordinal` is a data line's position after the header (its line number minus the header
    line); blank lines are counted, not passed on. Call `check()` once the batches are consumed.
    """

    path: str
    header: bool
    chunk: int = 1 << 23
    keep_blank_numbers: bool = False
    newlines: int = 0  # line breaks counted on the raw bytes
    physical_lines: int = 0  # lines the splitting produced
    blank_lines: int = 0
    data_lines: int = 0
    blank_numbers: list[int] = field(default_factory=list)
    done: bool = False
    error: InputError | None = None
    _ends_with_newline: bool = True

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The lines; a read error ends them early and is raised by `check()` (a query engine
        reading them would bury it in its own error)."""
        try:
            yield from self._batches()
        except (OSError, EOFError, pa.ArrowInvalid) as exc:
            self.error = InputError(
                f"{self.path}: cannot be read to the end ({exc}). Check it is a complete "
                "gzip/CSV file"
            )

    def _batches(self) -> Iterator[pa.RecordBatch]:
        pending: list[bytes] = []
        first = True
        with open_text(self.path) as handle:
            while True:
                data = handle.read(max(self.chunk, len(_BOM)) if first else self.chunk)
                if first and data.startswith(_BOM):
                    data = data[len(_BOM) :]
                first = False
                self.newlines += data.count(b"\n")
                if data:
                    self._ends_with_newline = data.endswith(b"\n")
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        pending.append(data)
                        continue
                    # a byte search is far faster than Arrow's search in each line
                    quotes = b'"' in data or any(b'"' in p for p in pending)
                    head = pa.py_buffer(data).slice(0, cut)  # no copy of the chunk
                    text = (
                        pa.py_buffer(b"".join([*pending, head.to_pybytes()])) if pending else head
                    )
                    pending = [data[cut + 1 :]] if cut + 1 < len(data) else []
                else:
                    text = pa.py_buffer(b"".join(pending))
                    if not text.size:
                        break
                    quotes = any(b'"' in p for p in pending)
                    pending = []
                batch = self._batch(text, quotes)
                if batch is not None:
                    yield batch
                if not data:
                    break
        self.done = True

    def _batch(self, text: pa.Buffer, maybe_quoted: bool = True) -> pa.RecordBatch | None:
        offsets = pa.py_buffer(np.array([0, text.size], dtype=np.int64))
        whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, text])
        raw = pc.split_pattern(whole, b"\n").flatten()
        first_number = self.physical_lines + 1
        self.physical_lines += len(raw)
        crlf = pc.ends_with(raw, pattern=b"\r")
        if pc.any(crlf).as_py():  # CRLF line ends: the CR belongs to the line break, not the line
            raw = pc.if_else(crlf, pc.binary_slice(raw, 0, -1), raw)
        numbers = np.arange(first_number, first_number + len(raw), dtype=np.int64)
        offsets = np.frombuffer(raw.buffers()[1], np.int64)[raw.offset : raw.offset + len(raw) + 1]
        keep = np.diff(offsets) != 0  # (numpy: Arrow's per-string kernels are far slower here)
        blank = len(raw) - int(np.count_nonzero(keep))
        if blank and self.keep_blank_numbers:
            self.blank_numbers += numbers[~keep].tolist()
        self.blank_lines += blank
        if self.header and first_number == 1:
            keep &= numbers != 1
        if not keep.all():
            raw = raw.filter(pa.array(keep))
            numbers = numbers[keep]
        n = len(raw)
        self.data_lines += n
        if n == 0:
            return None
        reasons: list[str | None] | None = None
        try:
            lines = raw.cast(pa.large_string())
        except pa.ArrowInvalid:  # some lines are not UTF-8: judge them one by one
            texts, reasons = [], [None] * n
            for i, value in enumerate(raw.to_pylist()):
                try:
                    texts.append(value.decode("utf-8"))
                except UnicodeDecodeError:
                    texts.append(value.decode("utf-8", errors="replace"))
                    reasons[i] = ENCODING_REASON
            lines = pa.array(texts, pa.large_string())
        fields: list[list[str] | None] | None = None
        quoted = pc.match_substring(lines, '"') if maybe_quoted else None
        if quoted is not None and pc.any(quoted).as_py():
            fields, reasons = [None] * n, reasons or [None] * n
            for index in np.flatnonzero(quoted.to_numpy(zero_copy_only=False)):
                i = int(index)
                split = split_quoted(lines[i].as_py())
                fields[i] = split
                if split is None and reasons[i] is None:
                    reasons[i] = QUOTING_REASON
        return pa.record_batch(
            [
                lines,
                pa.array(numbers - (1 if self.header else 0)),
                pa.array(fields, LINES_SCHEMA.field("fields").type)
                if fields
                else pa.nulls(n, LINES_SCHEMA.field("fields").type),
                pa.array(reasons, pa.string()) if reasons else pa.nulls(n, pa.string()),
            ],
            schema=LINES_SCHEMA,
        )

    @property
    def counted_lines(self) -> int:
        """Lines in the file by its line breaks: an unterminated last line counts too."""
        return self.newlines + (0 if self._ends_with_newline else 1)

    def check(self, bronze_rows: int, quarantined_rows: int) -> None:
        """Raise unless the whole file was read and every data line reached exactly one table."""
        if self.error is not None:
            raise self.error
        expected = self.counted_lines - self.blank_lines - (1 if self.header else 0)
        close_accounts(
            self.path,
            read_whole=self.done and self.physical_lines == self.counted_lines,
            data_lines=expected,
            bronze_rows=bronze_rows,
            quarantined_rows=quarantined_rows,
        )


@dataclass
class RowCount:
    """The accounts of an input whose rows are known up front (a Parquet file's metadata)."""

    path: str
    rows: int

    def check(self, bronze_rows: int, quarantined_rows: int) -> None:
        close_accounts(
            self.path,
            read_whole=True,
            data_lines=self.rows,
            bronze_rows=bronze_rows,
            quarantined_rows=quarantined_rows,
        )


def close_accounts(
    path: str, *, read_whole: bool, data_lines: int, bronze_rows: int, quarantined_rows: int
) -> None:
    """Refuse to commit an ingest whose rows do not add up to the data lines of its file."""
    if read_whole and bronze_rows + quarantined_rows == data_lines:
        return
    raise AccountingError(
        f"{path}: {data_lines:,} data rows counted in the file but {bronze_rows:,} went to "
        f"bronze_events and {quarantined_rows:,} to quarantine_events, so nothing was committed. "
        "Please report this with the file"
    )


def raw_csv_sql(lines: str) -> str:
    """The view `raw` (nine raw text columns, ordinal, reader_reason, raw_text) over the table
    `lines` a LineReader filled: fields split on commas, or as `split_quoted` found them."""
    from .contract import RAW_COLUMNS

    n = len(RAW_COLUMNS)
    columns = ", ".join(f"nullif(f[{i + 1}], '') AS {c}" for i, c in enumerate(RAW_COLUMNS))
    return f"""
    SELECT {columns}, ordinal,
        coalesce(reader_reason, CASE
            WHEN len(f) < {n} THEN 'missing columns: expected number of columns: {n} found: ' || len(f)
            WHEN len(f) > {n} THEN 'too many columns: expected number of columns: {n} found: ' || len(f)
        END) AS reader_reason,
        line AS raw_text
    FROM (SELECT CASE WHEN reader_reason IS NULL THEN coalesce(fields, string_split(line, ','))
                 END AS f, ordinal, reader_reason, line FROM {lines})
    """


def filesystem_of(location: str | Path) -> tuple[Any, str]:
    """The pyarrow filesystem holding `location` (a local path or a URI) and the path inside it."""
    from pyarrow import fs

    text = str(location)
    if "://" in text:
        return fs.FileSystem.from_uri(text)
    return fs.LocalFileSystem(), os.path.abspath(text)


def open_text(path: str | Path) -> Any:
    """A byte stream of the file's text (a .gz file is decompressed)."""
    filesystem, inner = filesystem_of(path)
    compression = "gzip" if str(path).lower().endswith(".gz") else None
    return filesystem.open_input_stream(inner, compression=compression)


def fingerprint(path: str | Path, chunk: int = 1 << 22) -> str:
    """Content identity: SHA-256 of every byte of the file as stored, and its size.

    Bronze rows carry it, so it is needed before the first row is written: one sequential read.
    """
    filesystem, inner = filesystem_of(path)
    digest = hashlib.sha256()
    size = 0
    # compression=None: the stored bytes, not a .gz file's decompressed text
    with filesystem.open_input_stream(inner, compression=None) as handle:
        while data := handle.read(chunk):
            digest.update(data)
            size += len(data)
    digest.update(str(size).encode())
    return digest.hexdigest()[:32]


def count_lines(path: str | Path, chunk: int = 1 << 24) -> int:
    """Lines in a text file (a .gz one decompressed) by its line breaks, for engines that read
    it elsewhere; an unterminated last line counts too."""
    newlines, last = 0, b"\n"
    with open_text(path) as handle:
        while data := handle.read(chunk):
            newlines += data.count(b"\n")
            last = data[-1:]
    return newlines + (0 if last == b"\n" else 1)


def quoted_fields_sql(column: str) -> str:
    """Spark SQL: True when `column` (a line holding quotes) has quotes only around whole fields,
    judged field by field after a quote-aware split (the same rule as `split_quoted`)."""
    return f"forall({column}, x -> instr(x, '\"') = 0 OR x rlike '^{QUOTED_FIELD}$')"


def arrow_lines(reader: LineReader) -> Any:
    """The reader's batches as one Arrow stream (DuckDB scans it once), read ahead by a thread
    so that splitting the next chunk (Arrow releases the GIL) overlaps judging this one."""
    return pa.RecordBatchReader.from_batches(LINES_SCHEMA, _read_ahead(reader.batches()))


def _read_ahead(batches: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    import queue
    import threading

    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: Any = end
        except BaseException as exc:  # handed to the consumer, which raises it
            item = exc
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    worker = threading.Thread(target=produce, name="funnelpulse-line-reader", daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
