"""Raw REES46 files (CSV, CSV.gz, Parquet) -> bronze_events, and quarantine_events for rows that cannot be typed.

Every input row ends in exactly one of the two tables. Re-ingesting a file replaces the rows
that file produced before, so running an ingest twice never duplicates anything.

This module holds what every engine shares: the typing rules, the checks a raw file must pass,
the bronze and quarantine rows. Reading a file is the engine's (engines/duckdb_ingest.py,
engines/spark_ingest.py); the lock and journal around one file are the ingest job's
(warehouse.py `ingest`, `ingest_file`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .console import Progress
from .contract import BRONZE_SCHEMA, QUARANTINE_SCHEMA, RAW_COLUMNS
from .errors import InputError
from .raw_lines import LineReader, RowCount, filesystem_of, open_text

# Reads one local raw file into bronze and quarantine: (warehouse, path, source, ingest_id,
# header, progress) -> what it produced. Each engine has its own; the local one is DuckDB's.
FileReader = Callable[[str, Path, str, str, bool, Progress], "FileResult"]

# The typing rules, in the order a row is judged: the first rule that fails is its reason.
# `raw` has the nine raw columns as text, `ordinal`, and `reader_reason`/`raw_text` for lines the
# reader itself could not split (each engine's reader marks them; the rules below keep its reason).
# A date, optionally a time, and optionally a zone that can only mean UTC (groups: date, time).
UTC_TIME = (
    r"^\s*(\d{4}-\d{2}-\d{2})(?:[Tt ]\s*(\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?))?"
    r"\s*(?:[Zz]|(?i:utc|gmt)|[+-]00(?::?00)?)?\s*$"
)

TYPED_SQL = r"""
SELECT
    ts AS event_time, etype AS event_type, pid AS product_id, cid AS category_id,
    NULLIF(category_code, '') AS category_code, NULLIF(brand, '') AS brand, p AS price,
    uid AS user_id, NULLIF(user_session, '') AS user_session, CAST(ts AS DATE) AS event_date,
    ordinal, reason,
    -- The raw text is kept (or rebuilt) only for the (few) rows that go to quarantine.
    CASE WHEN reason IS NULL THEN NULL WHEN raw_text IS NOT NULL THEN raw_text ELSE concat_ws(',',
        coalesce(event_time, ''), coalesce(raw_type, ''), coalesce(raw_pid, ''),
        coalesce(raw_cid, ''), coalesce(category_code, ''), coalesce(brand, ''),
        coalesce(raw_price, ''), coalesce(raw_uid, ''), coalesce(user_session, ''))
    END AS raw_line
FROM (
    SELECT *,
        CASE
            WHEN reader_reason IS NOT NULL THEN reader_reason
            WHEN ts IS NULL THEN 'bad event_time: ' || coalesce(event_time, '<empty>')
            WHEN ts > {NOT_AFTER} THEN '{FUTURE_REASON}: ' || event_time
            WHEN ts < {NOT_BEFORE} THEN '{LATE_REASON}: ' || event_time
            WHEN etype IS NULL THEN 'missing event_type'
            WHEN etype NOT IN ('view', 'cart', 'remove_from_cart', 'purchase')
                THEN 'unknown event_type: ' || raw_type
            WHEN raw_pid IS NULL THEN 'missing product_id'
            WHEN pid IS NULL THEN 'non-numeric product_id: ' || raw_pid
            WHEN raw_uid IS NULL THEN 'missing user_id'
            WHEN uid IS NULL THEN 'non-numeric user_id: ' || raw_uid
            WHEN raw_cid IS NOT NULL AND cid IS NULL THEN 'non-numeric category_id: ' || raw_cid
            WHEN raw_price IS NOT NULL AND p IS NULL THEN 'non-numeric price: ' || raw_price
            WHEN p < 0 OR isnan(p) OR isinf(p) THEN 'negative or invalid price: ' || raw_price
        END AS reason
    FROM (
        SELECT event_time, category_code, brand, user_session, ordinal, reader_reason, raw_text,
            event_type AS raw_type, product_id AS raw_pid, category_id AS raw_cid,
            price AS raw_price, user_id AS raw_uid,
            -- "... UTC" (REES46), any other spelling of UTC (Z, utc, GMT, +00:00, +0000, +00),
            -- or a time without a zone, taken as UTC. Any other zone is rejected: a cast would
            -- silently drop it (DuckDB) or convert it (Spark).
            coalesce(
                try_strptime(event_time, '%Y-%m-%d %H:%M:%S UTC'),
                CASE WHEN regexp_matches(event_time, '{UTC_TIME}')
                THEN TRY_CAST(rtrim(regexp_replace(event_time, '{UTC_TIME}', '\1 \2'))
                    AS TIMESTAMP) END
            ) AS ts,
            NULLIF(lower(trim(event_type)), '') AS etype,
            TRY_CAST(product_id AS BIGINT) AS pid,
            TRY_CAST(category_id AS BIGINT) AS cid,
            TRY_CAST(price AS DOUBLE) AS p,
            TRY_CAST(user_id AS BIGINT) AS uid
        FROM raw
    )
)
""".replace("{UTC_TIME}", UTC_TIME)
# The default of the setting max_future_s: how far ahead of the clock an event time may be.
DEFAULT_MAX_FUTURE_S = 3600
# Event-time bounds: `typed_sql(latest=..., earliest=...)` replaces these open bounds. Batch ingest
# sets only `latest` (the clock plus max_future_s); the stream also sets `earliest`, its watermark.
NO_LATEST = "TIMESTAMP '9999-12-31 23:59:59'"
NO_EARLIEST = "TIMESTAMP '0001-01-01 00:00:00'"
FUTURE_REASON = "event_time ahead of the clock by more than max_future_s"
LATE_REASON = "late, behind the watermark of the stream"
TYPED_SQL = (
    TYPED_SQL.replace("{NOT_AFTER}", NO_LATEST)
    .replace("{NOT_BEFORE}", NO_EARLIEST)
    .replace("{FUTURE_REASON}", FUTURE_REASON)
    .replace("{LATE_REASON}", LATE_REASON)
)


def not_after(max_future_s: int, now: datetime | None = None) -> datetime:
    """The latest event time a run accepts: the clock plus `max_future_s` (naive UTC)."""
    now = now or datetime.now(UTC)
    return (now + timedelta(seconds=max_future_s)).astimezone(UTC).replace(tzinfo=None)


def _timestamp(value: datetime) -> str:
    return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def typed_sql(
    keep: tuple[str, ...] = (),
    latest: datetime | None = None,
    earliest: datetime | None = None,
) -> str:
    """TYPED_SQL, also passing the columns `keep` of `raw` through to its output unchanged; events
    after `latest` (ahead of the clock) or before `earliest` (late) are quarantined (naive UTC)."""
    sql = TYPED_SQL
    for bound, value in ((NO_LATEST, latest), (NO_EARLIEST, earliest)):
        if value is not None:
            assert sql.count(bound) == 1, bound
            sql = sql.replace(bound, _timestamp(value))
    for old in ("ordinal, reason,", "ordinal, reader_reason,"):
        assert sql.count(old) == 1, old
        sql = sql.replace(
            old, old.replace("ordinal, ", "ordinal, " + "".join(f"{c}, " for c in keep))
        )
    return sql


@dataclass
class FileResult:
    """What one input file produced."""

    path: str
    bronze_rows: int = 0
    quarantined_rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestResult:
    files: list[FileResult] = field(default_factory=list)

    @property
    def bronze_rows(self) -> int:
        return sum(f.bronze_rows for f in self.files)

    @property
    def quarantined_rows(self) -> int:
        return sum(f.quarantined_rows for f in self.files)


def file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith(".csv") or name.endswith(".csv.gz") or name.endswith(".gz"):
        return "csv"
    raise InputError(
        f"{path}: unsupported file type. Give raw REES46 events as .csv, .csv.gz or .parquet"
    )


def _first_lines(path: str | Path) -> tuple[bytes, bytes]:
    """The first line and the first non-blank line after it (from the first 256 KiB)."""
    try:
        with open_text(path) as handle:
            head = handle.read(1 << 18)
    except (OSError, EOFError, pa.ArrowException) as exc:
        raise InputError(
            f"{path}: cannot be read ({exc}). Check it is a valid gzip/CSV file"
        ) from exc
    lines = head.split(b"\n")
    rest = [line for line in lines[1:] if line.strip()]
    return lines[0] + (b"\n" if len(lines) > 1 else b""), rest[0] if rest else b""


def _blank_lines(path: str | Path, chunk: int = 1 << 23) -> list[int]:
    """Numbers of the empty lines of a text file, as the ingest's line reader finds them."""
    reader = LineReader(str(path), header=False, chunk=chunk, keep_blank_numbers=True)
    for _ in reader.batches():
        pass
    return reader.blank_numbers


def _csv_has_header(path: str | Path) -> bool:
    """True when the first line is the REES46 header, False when it is already a data row."""
    line, second = _first_lines(path)
    if not line.strip():
        raise InputError(f"{path}: the file is empty. Give a file with REES46 events")
    try:
        text = line.decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: is not UTF-8 text. Convert it to UTF-8 CSV first") from exc
    fields = [f.strip().strip('"') for f in text.split(",")]
    if fields == list(RAW_COLUMNS):
        if not second:
            raise InputError(f"{path}: has a header but no data rows. Give a file with events")
        return True
    if len(fields) == len(RAW_COLUMNS) and fields[0][:2] in ("19", "20") and fields[0][4:5] == "-":
        return False
    raise InputError(
        f"{path}: not in the REES46 format (first line {text[:80]!r}). Expected the header "
        f"{','.join(RAW_COLUMNS)}"
    )


def check_file(path: str | Path) -> bool:
    """Refuse what is not a REES46 file with a clear error; True if a CSV starts with its header."""
    from pyarrow import fs

    filesystem, inner = filesystem_of(path)
    info = filesystem.get_file_info(inner)
    if info.type == fs.FileType.NotFound:
        raise InputError(f"{path}: no such file. Check the path")
    if info.type == fs.FileType.Directory:
        raise InputError(f"{path}: is a directory. Give the event files inside it")
    if info.size == 0:
        raise InputError(f"{path}: the file is empty. Give a file with REES46 events")
    return file_kind(Path(inner)) == "csv" and _csv_has_header(path)


def bronze_batches(
    reader: Iterable[pa.RecordBatch],
    source: str,
    ingest_id: str,
    bad: list[pa.RecordBatch],
    accounts: LineReader | RowCount,
) -> Iterator[pa.RecordBatch]:
    """Stream good rows to the bronze writer; keep bad ones (few) aside for quarantine.

    Once the input is exhausted the rows are checked against the lines read, before the writer
    can commit anything (it raises AccountingError).
    """
    good = 0
    for batch in reader:
        reason = batch.column("reason")
        bad_mask = pc.is_valid(reason)
        if pc.any(bad_mask).as_py():
            bad.append(batch.filter(bad_mask))
            batch = batch.filter(pc.invert(bad_mask))
        n = batch.num_rows
        good += n
        if n == 0:
            continue
        yield pa.record_batch(
            [
                *(batch.column(c) for c in RAW_COLUMNS),
                batch.column("event_date"),
                _constant(source, n),
                batch.column("ordinal"),
                _constant(ingest_id, n),
            ],
            names=BRONZE_SCHEMA.names,
        )
    accounts.check(good, sum(b.num_rows for b in bad))


def _constant(value: str, n: int) -> pa.Array:
    return pa.array([value], pa.string()).take(pa.array([0] * n, pa.int32()))


def quarantine_rows(
    bad: list[pa.RecordBatch], source: str, ingest_id: str, header: bool
) -> pa.Table:
    """The quarantine_events rows of the judged rows that failed a typing rule.

    The line reader numbers rows by their line after the header, so the line in the file is that
    number plus the header's line.
    """
    now = datetime.now(UTC)
    lines: list[int] = []
    raws: list[str] = []
    reasons: list[str] = []
    for batch in bad:
        lines += [k + (1 if header else 0) for k in batch.column("ordinal").to_pylist()]
        raws += batch.column("raw_line").to_pylist()
        reasons += batch.column("reason").to_pylist()
    n = len(lines)
    return pa.table(
        {
            "source_file": pa.array([source] * n, pa.string()),
            "line_number": pa.array(lines, pa.int64()),
            "raw_line": pa.array(raws, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "ingest_id": pa.array([ingest_id] * n, pa.string()),
            "ingested_at": pa.array([now] * n, pa.timestamp("us", "UTC")),
        },
        schema=QUARANTINE_SCHEMA,
    )


def list_uri(uri: str) -> list[str]:
    """The files a URI names: itself, or every file in it when it is a folder."""
    from pyarrow import fs

    try:
        filesystem, root = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(root)
        if info.type == fs.FileType.Directory:
            infos = filesystem.get_file_info(fs.FileSelector(root, recursive=False))
            names = sorted(i.path for i in infos if i.type == fs.FileType.File)
        elif info.type == fs.FileType.File:
            names = [root]
        else:
            raise InputError(f"{uri}: no such file or folder. Check the URI")
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{uri}: cannot be listed ({exc}). Check the URI and credentials") from exc
    scheme = uri.split("://", 1)[0]
    return [f"{scheme}://{name}" for name in names]
