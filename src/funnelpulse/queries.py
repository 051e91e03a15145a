"""Every read of the warehouse, whatever asks: the report, the funnel, the HTTP API, the SQL
server and `funnelpulse sql` get their numbers here, so they are one code path.

Each read pins every table it touches at the newest committed version (one opening of the
table's log gives both the version and its files), and says which versions it read. A write
committed meanwhile is seen whole on the next read, never half: its old files stay on disk
until `vacuum`, and the newest version's files are never vacuumed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds

from . import tables
from .contract import UNKNOWN, band_order_sql, rollup_sql
from .errors import ConfigError, WarehouseError
from .localdb import connect, track

if TYPE_CHECKING:
    from .funnel import FunnelResult, FunnelSpec

# The lasting incidents table (batch and live) another part of the product writes, when present.
INCIDENTS = getattr(tables, "INCIDENTS", "incidents")
TABLE_NAMES: tuple[str, ...] = tuple(dict.fromkeys((*tables.ALL_TABLES, INCIDENTS)))
# Tables the HTTP API serves row by row: gold, session funnels, anomalies, incidents, live.
# Raw events (bronze, quarantine, silver) are reachable through SQL only.
SERVED_TABLES: tuple[str, ...] = tuple(
    n for n in TABLE_NAMES if n not in (tables.BRONZE, tables.QUARANTINE, tables.SILVER)
)
# The column each table is filtered on by date (first match wins).
_DATE_COLUMNS = ("date", "window_date", "event_date", "bucket_start", "started_at", "recorded_at")

_WRITER = {
    tables.BRONZE: "`funnelpulse ingest FILE...`",
    tables.QUARANTINE: "`funnelpulse ingest FILE...`",
    tables.ANOMALIES: "`funnelpulse detect`",
    tables.ALERTS: "`funnelpulse detect --alert`",
    tables.GOLD_STREAM: "`funnelpulse stream`",
    tables.GOLD_STREAM_BUCKETS: "`funnelpulse stream`",
    tables.LIVE_INCIDENTS: "`funnelpulse stream --alert`",
    INCIDENTS: "`funnelpulse detect`",
}
MAX_ROWS = 10_000  # the most rows one response carries; more sets `truncated`


# ---------------------------------------------------------------------------------------------
# Pinned tables


_opened: dict[str, tuple[int, ds.Dataset]] = {}
_opened_guard = threading.Lock()


def _newest(path: str) -> tuple[ds.Dataset, int | None]:
    """The table at its newest version; reopened only when a newer commit exists (local tables
    tell that from the log's file names, so a hot read costs one folder listing)."""
    latest = tables.latest_version(path)
    if latest is not None:
        with _opened_guard:
            hit = _opened.get(path)
        if hit is not None and hit[0] == latest:
            return hit[1], latest
    data, version = tables.pinned(path, latest)
    if version is not None:
        with _opened_guard:
            _opened[path] = (version, data)
    return data, version


class Snapshot:
    """The warehouse's tables, each pinned at its newest version the first time it is asked for."""

    def __init__(self, warehouse: str) -> None:
        self.warehouse = warehouse
        self.versions: dict[str, int | None] = {}
        self._data: dict[str, ds.Dataset] = {}

    def exists(self, name: str) -> bool:
        return name in self._data or tables.exists(tables.table_path(self.warehouse, name))

    def names(self, among: Iterable[str] = TABLE_NAMES) -> list[str]:
        """The tables among `among` that exist in the warehouse."""
        return [n for n in among if self.exists(n)]

    def dataset(self, name: str) -> ds.Dataset:
        if name not in self._data:
            path = tables.table_path(self.warehouse, name)
            if not tables.exists(path):
                raise WarehouseError(
                    f"Table {name} not found in {self.warehouse}: the step that writes it has "
                    f"not run yet. Run {_WRITER.get(name, '`funnelpulse build`')} first"
                )
            self._data[name], self.versions[name] = _newest(path)
        return self._data[name]

    def register(self, con: Any, names: Iterable[str]) -> None:
        for name in names:
            con.register(name, self.dataset(name))


@dataclass
class Read:
    """What a read returns: its data and the version of every table it read."""

    data: Any
    versions: dict[str, int | None] = field(default_factory=dict)


def _records(con: Any, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    rel = con.execute(sql, params) if params is not None else con.sql(sql)
    columns = [d[0] for d in rel.description]
    return [dict(zip(columns, r, strict=True)) for r in rel.fetchall()]


_base: Any = None
_base_guard = threading.Lock()


def _cursor() -> Any:
    """A fresh connection to one shared in-memory database: its own registered tables, none of
    the cost of starting a database per request."""
    global _base
    with _base_guard:
        if _base is None:
            _base = connect()
        con = track(_base.cursor())
    con.execute("SET TimeZone='UTC'")
    return con


def _between(column: str, since: date | None, until: date | None) -> str:
    """A WHERE clause keeping the UTC dates since..until (either end open when None)."""
    parts = [f"{column} >= DATE '{since}'"] if since else []
    parts += [f"{column} <= DATE '{until}'"] if until else []
    return f" WHERE {' AND '.join(parts)}" if parts else ""


def _gap_range(since: date | None, until: date | None) -> str:
    """Gaps that touch the chosen dates (the gap SQL's own WHERE goes on with AND)."""
    out = ""
    if since:
        out += f" AND following >= DATE '{since.isoformat()}'"
    if until:
        out += f" AND hour + INTERVAL 1 HOUR < DATE '{until.isoformat()}' + INTERVAL 1 DAY"
    return out


def coverage_gaps_sql(since: date | None = None, until: date | None = None) -> str:
    """Hours with no event at all, shop-wide (start, end, hours), that touch since..until: one
    query for the report, the API and the dashboard's charts."""
    return f"""WITH hours AS (
            SELECT DISTINCT window_start AS hour FROM {tables.GOLD_HOURLY_PRICE_BAND}
        ), next AS (
            SELECT hour, lead(hour) OVER (ORDER BY hour) AS following FROM hours
        )
        SELECT hour + INTERVAL 1 HOUR AS start, following AS "end",
            CAST(date_diff('hour', hour, following) - 1 AS BIGINT) AS hours
        FROM next
        WHERE following > hour + INTERVAL 1 HOUR
            {_gap_range(since, until)}
        ORDER BY start"""


def coverage_gaps(warehouse: str, since: date | None = None, until: date | None = None) -> Read:
    """The coverage gaps as rows (`data`: start, end, hours); none without an hourly table."""
    snap = Snapshot(warehouse)
    if not snap.exists(tables.GOLD_HOURLY_PRICE_BAND):
        return Read([], snap.versions)
    con = _cursor()
    try:
        snap.register(con, (tables.GOLD_HOURLY_PRICE_BAND,))
        return Read(_records(con, coverage_gaps_sql(since, until)), snap.versions)
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# The report and the funnel


def report(
    warehouse: str, top: int = 5, since: date | None = None, until: date | None = None
) -> Read:
    """Everything `funnelpulse report` prints, as plain data (JSON-ready).

    `since`/`until` keep only those UTC dates (both included) in every figure except the table
    sizes, so the figures equal the dashboard's for the same date range.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"top = {top!r}: give a whole number of at least 1")
    if since and until and since > until:
        raise ConfigError(f"since {since} is after until {until}. Swap them")
    snap = Snapshot(warehouse)
    rows = {name: snap.dataset(name).count_rows() for name in snap.names(tables.ALL_TABLES)}
    if not rows:
        raise WarehouseError(
            f"No warehouse at {warehouse} (no tables there). Run `funnelpulse ingest FILE...` and "
            "`funnelpulse build` first, or give the right --warehouse"
        )
    result: dict[str, Any] = {"warehouse": warehouse, "tables": rows}
    if since or until:
        result["range"] = {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        }
    if tables.GOLD_DAILY_BRAND not in rows:
        return Read(result, snap.versions)
    day = _between("date", since, until)
    con = connect()
    try:
        snap.register(
            con,
            (tables.GOLD_DAILY_BRAND, tables.GOLD_DAILY_CATEGORY, tables.GOLD_HOURLY_PRICE_BAND),
        )
        span = _records(
            con, f"SELECT MIN(date) AS start, MAX(date) AS end FROM {tables.GOLD_DAILY_BRAND}{day}"
        )[0]
        result["date_range"] = {k: v.isoformat() if v else None for k, v in span.items()}
        result["funnel"] = _records(
            con, f"SELECT {rollup_sql(revenue_digits=2)} FROM {tables.GOLD_DAILY_BRAND}{day}"
        )[0]
        result["top_brands"] = _records(
            con,
            f"""SELECT coalesce(brand, '{UNKNOWN}') AS brand, {rollup_sql(revenue_digits=2)}
            FROM {tables.GOLD_DAILY_BRAND}{day}
            GROUP BY brand ORDER BY revenue DESC, brand LIMIT {top}""",
        )
        result["categories"] = _records(
            con,
            f"""SELECT coalesce(category_root, '{UNKNOWN}') AS category_root, {rollup_sql(revenue_digits=2)}
            FROM {tables.GOLD_DAILY_CATEGORY}{day} GROUP BY category_root
            ORDER BY revenue DESC, category_root LIMIT {top}""",
        )
        result["price_bands"] = _records(
            con,
            f"""SELECT price_band, {rollup_sql(revenue_digits=2)}
            FROM {tables.GOLD_HOURLY_PRICE_BAND}{_between("window_date", since, until)}
            GROUP BY price_band
            ORDER BY {band_order_sql("price_band")}""",
        )
        result["coverage_gaps"] = _records(con, coverage_gaps_sql(since, until))
        if INCIDENTS in rows:
            snap.register(con, (INCIDENTS,))
            result["incidents"] = _records(
                con,
                f"""SELECT incident_id, root, step, kind, status, severity, started_at, ended_at,
                    json_array_length(segments) AS segments
                FROM {INCIDENTS}{_between("CAST(started_at AS DATE)", since, until)}
                ORDER BY started_at, incident_id""",
            )
        if tables.ANOMALIES in rows:
            snap.register(con, (tables.ANOMALIES,))
            result["anomalies"] = _records(
                con,
                f"""SELECT severity, COUNT(*) AS count
                FROM anomalies{_between("window_date", since, until)}
                GROUP BY severity ORDER BY count DESC, severity""",
            )
    finally:
        con.close()
    return Read(result, snap.versions)


def funnel(
    warehouse: str,
    spec: FunnelSpec,
    since: date | None = None,
    until: date | None = None,
    grain: str = "total",
    memory_mb: int | None = None,
) -> Read:
    """The ordered session funnel (`funnelpulse funnel`), computed from silver at its newest
    version; `data` is a FunnelResult."""
    from . import funnel as fn

    snap = Snapshot(warehouse)
    if not snap.exists(tables.SILVER):
        raise WarehouseError(
            f"No silver_events table in {warehouse}. Run `funnelpulse build` first"
        )
    result: FunnelResult = fn.query(
        warehouse, spec, since, until, grain, memory_mb, silver=snap.dataset(tables.SILVER)
    )
    return Read(result, snap.versions)


# ---------------------------------------------------------------------------------------------
# Tables, row by row


@dataclass(frozen=True)
class Page:
    """One page of a table's rows: `truncated` says more rows match than were returned."""

    table: str
    columns: list[str]
    rows: list[dict[str, Any]]
    offset: int
    truncated: bool

    @property
    def next_offset(self) -> int | None:
        return self.offset + len(self.rows) if self.truncated else None


def catalog(warehouse: str, among: Iterable[str] = SERVED_TABLES) -> Read:
    """Every table that exists: its version, rows and columns (from metadata, no scan)."""
    snap = Snapshot(warehouse)
    out = []
    for name in snap.names(among):
        data = snap.dataset(name)
        out.append(
            {
                "name": name,
                "version": snap.versions[name],
                "rows": data.count_rows(),
                "date_column": date_column(data.schema),
                "columns": [{"name": f.name, "type": str(f.type)} for f in data.schema],
            }
        )
    return Read(out, snap.versions)


def date_column(schema: pa.Schema) -> str | None:
    return next((c for c in _DATE_COLUMNS if c in schema.names), None)


def parse_segment(text: str) -> tuple[str, str]:
    """`dimension:value` (brand:acme, price_band:<10) as a pair; the value may hold colons."""
    dimension, sep, value = text.partition(":")
    if not sep or not dimension or not value:
        raise ConfigError(
            f"segment {text!r} is not dimension:value. Write it as e.g. brand:acme or "
            "price_band:<10"
        )
    return dimension.strip(), value


def rows(
    warehouse: str,
    name: str,
    *,
    since: date | None = None,
    until: date | None = None,
    segments: Iterable[str] = (),
    equals: dict[str, str] | None = None,
    limit: int = 1_000,
    offset: int = 0,
    among: Iterable[str] = SERVED_TABLES,
) -> Read:
    """A page of `name`'s rows kept by date range and segments, in a stable order; `data` is a
    Page. `segments` are `dimension:value`; `equals` are column=value filters."""
    snap, data, tail, params = _page_query(
        warehouse, name, since, until, segments, equals, limit, offset, among
    )
    con = _cursor()
    try:
        con.register("t", data)
        found = _records(con, f"SELECT * FROM t{tail}", params)
    finally:
        con.close()
    page = Page(name, data.schema.names, found[:limit], offset, len(found) > limit)
    return Read(page, snap.versions)


def _page_query(
    warehouse: str,
    name: str,
    since: date | None,
    until: date | None,
    segments: Iterable[str],
    equals: dict[str, str] | None,
    limit: int,
    offset: int,
    among: Iterable[str],
) -> tuple[Snapshot, ds.Dataset, str, list[Any]]:
    """The checked request as its pinned table and the SQL after `FROM t` (filters, a stable
    order, one row past the page to tell `truncated`)."""
    among = tuple(among)
    if name not in among:
        raise ConfigError(f"Unknown table {name!r}. Use one of: {', '.join(among)}")
    if not 1 <= limit <= MAX_ROWS:
        raise ConfigError(f"limit = {limit}: give a number from 1 to {MAX_ROWS}")
    if offset < 0:
        raise ConfigError(f"offset = {offset}: give 0 or more")
    if since and until and since > until:
        raise ConfigError(f"since {since} is after until {until}. Swap them")
    snap = Snapshot(warehouse)
    data = snap.dataset(name)
    where, params = _filters(name, data.schema, since, until, segments, equals or {})
    order = ", ".join(_quoted(c) for c in _order_columns(data.schema))
    return snap, data, f"{where} ORDER BY {order} LIMIT {limit + 1} OFFSET {offset}", params


def _quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


@dataclass(frozen=True)
class JsonPage:
    """One page of a table's rows already encoded: `rows_json` is the JSON array of row
    objects, the same JSON as `Page.rows` encoded with `json.dumps(..., default=str)`; with
    `shape` "columns" it is one object of column name to its values in row order (the same
    values, far fewer JSON objects for a client to decode)."""

    table: str
    columns: list[str]
    rows_json: bytes
    count: int
    offset: int
    truncated: bool
    shape: str = "rows"

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.count if self.truncated else None


def _json_expr(field: pa.Field) -> str | None:
    """The SQL giving `field`'s value as the JSON encoder of `Page.rows` writes it (dates and
    times as Python's `str`); None for a type this does not cover."""
    col, kind = _quoted(field.name), field.type
    if (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_date32(kind)
    ):
        return col
    if pa.types.is_timestamp(kind):  # str(datetime): fraction only when not zero, +00:00 zone
        zone = "+00:00" if kind.tz is not None else ""
        return (
            f"CASE WHEN microsecond({col}) % 1000000 = 0 "
            f"THEN strftime({col}, '%Y-%m-%d %H:%M:%S{zone}') "
            f"ELSE strftime({col}, '%Y-%m-%d %H:%M:%S.%f{zone}') END"
        )
    return None


def rows_json(
    warehouse: str,
    name: str,
    *,
    since: date | None = None,
    until: date | None = None,
    segments: Iterable[str] = (),
    equals: dict[str, str] | None = None,
    limit: int = 1_000,
    offset: int = 0,
    among: Iterable[str] = SERVED_TABLES,
    shape: str = "rows",
) -> Read:
    """The page `rows` gives, encoded to JSON by the database itself (no Python object per
    value: a month of gold encodes in a few milliseconds); `data` is a JsonPage. `shape` is
    "rows" (a list of row objects) or "columns" (column name to its list of values)."""
    if shape not in SHAPES:
        raise ConfigError(f"shape = {shape!r}: use one of {', '.join(SHAPES)}")
    snap, data, tail, params = _page_query(
        warehouse, name, since, until, segments, equals, limit, offset, among
    )
    fields = [(f.name, _json_expr(f)) for f in data.schema]
    if any(expr is None for _, expr in fields):  # a type the SQL encoding does not cover
        read = rows(
            warehouse,
            name,
            since=since,
            until=until,
            segments=segments,
            equals=equals,
            limit=limit,
            offset=offset,
            among=among,
        )
        page: Page = read.data
        body: Any = page.rows
        if shape == "columns":
            body = {c: [r[c] for r in page.rows] for c in page.columns}
        encoded = json.dumps(body, default=str).encode()
        return Read(
            JsonPage(name, page.columns, encoded, len(page.rows), offset, page.truncated, shape),
            read.versions,
        )
    if shape == "columns":
        return _columns_json(snap, name, data, fields, tail, params, limit, offset)
    packed = ", ".join(f"{_quoted(n)} := {expr}" for n, expr in fields)
    con = _cursor()
    try:
        con.register("t", data)
        found = con.execute(
            f"SELECT CAST(to_json(struct_pack({packed})) AS VARCHAR) FROM t{tail}", params
        ).fetchall()
    finally:
        con.close()
    kept = found[:limit]
    encoded = ("[" + ",".join(r[0] for r in kept) + "]").encode()
    done = JsonPage(name, data.schema.names, encoded, len(kept), offset, len(found) > limit)
    return Read(done, snap.versions)


SHAPES = ("rows", "columns")


def _columns_json(
    snap: Snapshot,
    name: str,
    data: ds.Dataset,
    fields: list[tuple[str, str | None]],
    tail: str,
    params: list[Any],
    limit: int,
    offset: int,
) -> Read:
    """The page as one JSON object of column name to values, encoded by the database: the page
    is fetched as Arrow, numbered, and each column aggregated in that numbered order."""
    con = _cursor()
    try:
        con.register("t", data)
        page = con.sql(f"SELECT * FROM t{tail}", params=params).to_arrow_table()
        found = page.num_rows
        page = page.slice(0, limit)
        page = page.append_column("fp_row", pa.array(range(page.num_rows), pa.int64()))
        con.register("fp_page", page)
        packed = ", ".join(
            f"{_quoted(n)} := coalesce(list({expr} ORDER BY fp_row), [])" for n, expr in fields
        )
        encoded = con.execute(
            f"SELECT CAST(to_json(struct_pack({packed})) AS VARCHAR) FROM fp_page"
        ).fetchall()[0][0]
    finally:
        con.close()
    done = JsonPage(
        name, data.schema.names, encoded.encode(), page.num_rows, offset, found > limit, "columns"
    )
    return Read(done, snap.versions)


def _order_columns(schema: pa.Schema) -> list[str]:
    """Date first, then the other sortable columns: the same order on every page."""
    first = [c for c in (date_column(schema),) if c]
    plain = [
        f.name
        for f in schema
        if f.name not in first
        and (
            pa.types.is_integer(f.type)
            or pa.types.is_string(f.type)
            or pa.types.is_temporal(f.type)
        )
    ]
    return first + plain


def _filters(
    name: str,
    schema: pa.Schema,
    since: date | None,
    until: date | None,
    segments: Iterable[str],
    equals: dict[str, str],
) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    if since or until:
        column = date_column(schema)
        if column is None:
            raise ConfigError(f"Table {name} has no date column: leave out since and until")
        expr = f'CAST("{column}" AS DATE)'
        if since:
            parts.append(f"{expr} >= ?")
            params.append(since)
        if until:
            parts.append(f"{expr} <= ?")
            params.append(until)
    for text in segments:
        dimension, value = parse_segment(text)
        if dimension in schema.names and dimension not in ("dimension", "segment"):
            parts.append(f'"{dimension}" = ?')
            params.append(value)
        elif {"dimension", "segment"} <= set(schema.names):
            parts.append("dimension = ? AND segment = ?")
            params += [dimension, value]
        else:
            raise ConfigError(
                f"Table {name} has no {dimension!r} segments. Segment columns here: "
                f"{', '.join(segment_columns(schema)) or 'none'}"
            )
    for column, value in equals.items():
        if column not in schema.names:
            raise ConfigError(
                f"Table {name} has no column {column!r}. Columns: {', '.join(schema.names)}"
            )
        parts.append(f'CAST("{column}" AS VARCHAR) = ?')
        params.append(value)
    return (f" WHERE {' AND '.join(parts)}" if parts else ""), params


def segment_columns(schema: pa.Schema) -> list[str]:
    """The text columns a table can be filtered on by segment."""
    if {"dimension", "segment"} <= set(schema.names):
        return ["dimension:segment"]
    return [c for c in ("brand", "category_root", "price_band") if c in schema.names]


def anomalies(warehouse: str, **kwargs: Any) -> Read:
    """Batch anomalies (the `anomalies` table), filtered like any table."""
    return rows(warehouse, tables.ANOMALIES, **kwargs)


def incidents(warehouse: str, *, limit: int = 1_000, **kwargs: Any) -> Read:
    """Every incident there is: the lasting `incidents` table when the warehouse has one, the
    live (open-window) incidents, and the batch alerts sent; each list says where it came from."""
    snap = Snapshot(warehouse)
    out: dict[str, Any] = {}
    versions: dict[str, int | None] = {}
    for key, name in (
        ("incidents", INCIDENTS),
        ("live", tables.LIVE_INCIDENTS),
        ("alerts", tables.ALERTS),
    ):
        if not snap.exists(name):
            continue
        read = rows(warehouse, name, limit=limit, among=(name,), **kwargs)
        page: Page = read.data
        out[key] = {
            "table": name,
            "rows": page.rows,
            "truncated": page.truncated,
            "next_offset": page.next_offset,
        }
        versions.update(read.versions)
    return Read(out, versions)


def live_buckets(warehouse: str, **kwargs: Any) -> Read:
    """The stream's live buckets (gold_stream_funnel_buckets), filtered like any table."""
    return rows(warehouse, tables.GOLD_STREAM_BUCKETS, **kwargs)


# ---------------------------------------------------------------------------------------------
# Rollups: the funnel of a date range, per segment and over time (the dashboard and the API)

# The gold table each dimension is rolled up from, with its date column.
DIMENSIONS: dict[str, tuple[str, str]] = {
    "brand": (tables.GOLD_DAILY_BRAND, "date"),
    "category_root": (tables.GOLD_DAILY_CATEGORY, "date"),
    "price_band": (tables.GOLD_HOURLY_PRICE_BAND, "window_date"),
}
# Categories are built per day only; brands and price bands have hourly tables.
HOURLY: dict[str, str] = {
    "brand": tables.GOLD_HOURLY_BRAND,
    "price_band": tables.GOLD_HOURLY_PRICE_BAND,
}
GRAINS = ("day", "hour")


def _dimension(name: str) -> str:
    if name not in DIMENSIONS:
        raise ConfigError(f"Unknown dimension {name!r}. Use one of: {', '.join(DIMENSIONS)}")
    return name


def _range(since: date, until: date) -> None:
    if since > until:
        raise ConfigError(f"since {since} is after until {until}. Swap them")


def _kept(
    date_column: str,
    since: date,
    until: date,
    dimension: str | None,
    values: Iterable[str],
) -> tuple[str, list[Any]]:
    """The WHERE clause keeping since..until and, when `values` are given, those segments of
    `dimension` (a missing value is the segment `unknown`)."""
    where = f"{date_column} BETWEEN ? AND ?"
    params: list[Any] = [since, until]
    values = list(values)
    if dimension and values:
        where += f" AND coalesce({dimension}, '{UNKNOWN}') IN ({', '.join('?' for _ in values)})"
        params += values
    return where, params


def _arrow(snap: Snapshot, names: Iterable[str], sql: str, params: list[Any]) -> pa.Table:
    con = _cursor()
    try:
        snap.register(con, names)
        return con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()


def date_bounds(warehouse: str, snapshot: Snapshot | None = None) -> Read:
    """The first and last dates of the daily gold (`data`: (first, last), or None when empty)."""
    snap = snapshot or Snapshot(warehouse)
    if not snap.exists(tables.GOLD_DAILY_BRAND):
        return Read(None, snap.versions)
    found = _arrow(
        snap,
        (tables.GOLD_DAILY_BRAND,),
        f"SELECT MIN(date) AS lo, MAX(date) AS hi FROM {tables.GOLD_DAILY_BRAND}",
        [],
    ).to_pylist()[0]
    span = None if found["lo"] is None else (found["lo"], found["hi"])
    return Read(span, snap.versions)


def segment_values(warehouse: str, dimension: str, snapshot: Snapshot | None = None) -> Read:
    """A dimension's segments, biggest revenue first (price bands in band order)."""
    table, _ = DIMENSIONS[_dimension(dimension)]
    snap = snapshot or Snapshot(warehouse)
    if not snap.exists(table):
        return Read([], snap.versions)
    found = _arrow(
        snap,
        (table,),
        f"SELECT coalesce({dimension}, '{UNKNOWN}') AS v, SUM(revenue) AS r FROM {table} "
        "GROUP BY 1 ORDER BY r DESC, v",
        [],
    ).column("v").to_pylist()
    if dimension == "price_band":
        from .contract import BAND_LABELS

        found = [b for b in BAND_LABELS if b in found]
    return Read(found, snap.versions)


def rollup(
    warehouse: str,
    since: date,
    until: date,
    dimension: str | None = None,
    values: Iterable[str] = (),
    snapshot: Snapshot | None = None,
) -> Read:
    """The funnel of since..until (counts summed, rates from the sums), over `dimension`'s
    table, kept to `values` of it when given; `data` is one row as a dict."""
    _range(since, until)
    table, date_column = DIMENSIONS[_dimension(dimension or "brand")]
    snap = snapshot or Snapshot(warehouse)
    where, params = _kept(date_column, since, until, dimension, values)
    found = _arrow(snap, (table,), f"SELECT {rollup_sql()} FROM {table} WHERE {where}", params)
    return Read(found.to_pylist()[0], snap.versions)


def leaderboard(
    warehouse: str,
    dimension: str,
    since: date,
    until: date,
    values: Iterable[str] = (),
    limit: int | None = None,
    snapshot: Snapshot | None = None,
) -> Read:
    """One row per segment of `dimension` in since..until (kept to `values` when given): the
    funnel, rates and average order value, biggest revenue first (price bands in band order);
    `data` is an Arrow table."""
    _range(since, until)
    table, date_column = DIMENSIONS[_dimension(dimension)]
    if limit is not None and limit < 1:
        raise ConfigError(f"limit = {limit}: give a whole number of at least 1")
    snap = snapshot or Snapshot(warehouse)
    where, params = _kept(date_column, since, until, dimension, values)
    order = band_order_sql("segment") if dimension == "price_band" else "revenue DESC, segment"
    found = _arrow(
        snap,
        (table,),
        f"""SELECT coalesce({dimension}, '{UNKNOWN}') AS segment, {rollup_sql()},
            SUM(revenue) / NULLIF(SUM(purchases), 0) AS avg_order_value
        FROM {table} WHERE {where}
        GROUP BY 1 ORDER BY {order} {f"LIMIT {int(limit)}" if limit else ""}""",
        params,
    )
    return Read(found, snap.versions)


def can_hourly(warehouse: str, dimension: str | None, snapshot: Snapshot | None = None) -> bool:
    """Whether `dimension` (brand by default) has an hourly table in the warehouse."""
    table = HOURLY.get(dimension or "brand")
    return table is not None and (snapshot or Snapshot(warehouse)).exists(table)


def series(
    warehouse: str,
    since: date,
    until: date,
    grain: str = "day",
    by: str | None = None,
    dimension: str | None = None,
    values: Iterable[str] = (),
    snapshot: Snapshot | None = None,
) -> Read:
    """The funnel per day or hour of since..until (a `date` column), per segment of `by` when
    given, kept to `values` of `dimension`; `data` is an Arrow table. An hourly series without
    `by` has every hour of the range (zero where nothing happened): a quiet hour is drawn as
    zero, not as a line across it. Hourly falls back to daily for categories (built per day)."""
    _range(since, until)
    values = tuple(values)
    if grain not in GRAINS:
        raise ConfigError(f"grain = {grain!r}: use one of {', '.join(GRAINS)}")
    column = _dimension(by or dimension or "brand")
    snap = snapshot or Snapshot(warehouse)
    hourly = grain == "hour" and can_hourly(warehouse, column, snap)
    table, date_column = (HOURLY[column], "window_date") if hourly else DIMENSIONS[column]
    if dimension and list(values) and column != dimension:
        raise ConfigError(
            f"Segments of {dimension} cannot be kept in a series by {column}: give segments of "
            f"{column}, or leave out by"
        )
    where, params = _kept(date_column, since, until, dimension, values)
    time_column = "window_start" if hourly else date_column
    label = f", coalesce({column}, '{UNKNOWN}') AS segment" if by else ""
    group = ", segment" if by else ""
    select = (
        f"SELECT {time_column} AS date{label}, {rollup_sql()} FROM {table} "
        f"WHERE {where} GROUP BY {time_column}{group}"
    )
    if not hourly or by:
        found = _arrow(snap, (table,), f"{select} ORDER BY 1{group}", params)
        return Read(found, snap.versions)
    found = _arrow(
        snap,
        (table,),
        f"""WITH hours AS (
            SELECT unnest(generate_series(CAST(? AS DATE)::TIMESTAMPTZ,
                CAST(? AS DATE)::TIMESTAMPTZ + INTERVAL 23 HOUR, INTERVAL 1 HOUR)) AS date
        ), found AS ({select})
        SELECT hours.date, coalesce(views, 0) AS views, coalesce(carts, 0) AS carts,
            coalesce(purchases, 0) AS purchases, coalesce(revenue, 0) AS revenue,
            view_to_cart_rate, cart_to_purchase_rate, conversion_rate
        FROM hours LEFT JOIN found USING (date) ORDER BY hours.date""",
        [since, until, *params],
    )
    return Read(found, snap.versions)


def kept_segments(segments: Iterable[str]) -> tuple[str | None, tuple[str, ...]]:
    """`dimension:value` segments (brand:acme, repeated) as their one dimension and values."""
    pairs = [parse_segment(s) for s in segments]
    dimensions = {d for d, _ in pairs}
    if len(dimensions) > 1:
        raise ConfigError(
            f"segments of {', '.join(sorted(dimensions))} given together: keep segments of one "
            "dimension (e.g. segment=brand:acme&segment=brand:zeta)"
        )
    if not pairs:
        return None, ()
    return _dimension(pairs[0][0]), tuple(v for _, v in pairs)


def whole_range(
    warehouse: str, since: date | None, until: date | None, snapshot: Snapshot
) -> tuple[date, date]:
    """since..until with an open end filled by the daily gold's first or last date."""
    if since is None or until is None:
        span = date_bounds(warehouse, snapshot).data
        if span is None:
            raise WarehouseError(
                f"No gold tables in {warehouse}. Run `funnelpulse build` first"
            )
        since, until = since or span[0], until or span[1]
    return since, until
