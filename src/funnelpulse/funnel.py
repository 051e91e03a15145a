"""Ordered session funnels (view -> cart -> purchase within a conversion window), per actor.

The event-count tables answer "how many carts per view"; this answers "how many sessions that
viewed went on to cart, then buy, in order". One SQL template (models/session_funnel.sql) serves
the `funnel` command (any window, breakdown or unit, computed from silver at query time) and the
gold_session_funnel_daily* tables (24 h window, per session), on DuckDB and on Spark.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import tables
from .console import Progress
from .errors import ConfigError, FunnelPulseError, WarehouseError

DAY_SECONDS = 86_400
DEFAULT_WINDOW = DAY_SECONDS
# DuckDB memory cap of a funnel query or build (setting funnel_memory_mb); the rest spills to disk.
DEFAULT_MEMORY_MB = 1536
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": DAY_SECONDS}

# Breakdown name -> (silver column held constant, output column name).
BREAKDOWNS: dict[str, tuple[str, str]] = {
    "brand": ("brand_norm", "brand"),
    "category": ("category_root", "category_root"),
    "price_band": ("price_band", "price_band"),
}

GOLD_SESSION_FUNNEL = tables.GOLD_SESSION_FUNNEL
# Gold table name -> breakdown (None: the whole shop).
GOLD_FUNNELS: dict[str, str | None] = dict(
    zip(tables.GOLD_SESSION_FUNNELS, (None, "brand", "category", "price_band"), strict=True)
)
GOLD_PARTITION = "date"

MEASURES = (
    "sessions",
    "carted",
    "purchased",
    "view_to_cart_rate",
    "cart_to_purchase_rate",
    "conversion_rate",
    "cart_abandonment_rate",
    "median_seconds_to_cart",
    "p90_seconds_to_cart",
    "median_seconds_cart_to_purchase",
    "p90_seconds_cart_to_purchase",
    "revenue",
)


def parse_window(text: str) -> int:
    """`30m`, `2h`, `7d`, `90s` -> seconds (a typo must not silently become a different window)."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text or "")
    seconds = int(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if seconds <= 0:
        raise ConfigError(
            f"--window {text!r} is not a duration. Use a positive number with a unit: "
            "s, m, h or d (e.g. 30m, 2h, 7d)"
        )
    return seconds


def format_window(seconds: int) -> str:
    for unit, size in (("d", DAY_SECONDS), ("h", 3_600), ("m", 60)):
        if seconds % size == 0 and not (unit == "d" and seconds < 2 * DAY_SECONDS):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class FunnelSpec:
    """Which funnel: conversion window, breakdown held constant, product held constant, unit."""

    window_seconds: int = DEFAULT_WINDOW
    by: str | None = None
    same_product: bool = False
    by_user: bool = False

    def __post_init__(self) -> None:
        if self.by is not None and self.by not in BREAKDOWNS:
            raise ConfigError(f"Unknown breakdown {self.by!r}. Use brand, category or price_band")
        if self.window_seconds <= 0:
            raise ConfigError("The conversion window must be positive. Use e.g. 30m, 2h or 7d")

    @property
    def unit_name(self) -> str:
        return "user" if self.by_user else "session"

    @property
    def key_column(self) -> str | None:
        return BREAKDOWNS[self.by][1] if self.by else None

    @property
    def window_days(self) -> int:
        """Whole days after an entry date on which its later steps can fall."""
        return -(-self.window_seconds // DAY_SECONDS)


def _day(value: date) -> str:
    return f"DATE '{value.isoformat()}'"


def _between(column: str, low: date | None, high: date | None) -> str:
    parts = [f"{column} >= {_day(low)}" if low else "", f"{column} <= {_day(high)}" if high else ""]
    return " AND ".join(p for p in parts if p) or "TRUE"


def _within(column: str, days: frozenset[date]) -> str:
    return f"{column} IN ({', '.join(_day(d) for d in sorted(days))})"


def render(
    spec: FunnelSpec,
    since: date | None = None,
    until: date | None = None,
    grain: str = "total",
    days: frozenset[date] | None = None,
) -> str:
    """The funnel SQL (DuckDB dialect) for entries on UTC dates since..until, one row per
    grain ('total', 'date' or 'hour') and breakdown value. Given `days` (not empty), for entries
    on exactly those dates instead (an incremental build's set; since/until are ignored)."""
    if days is not None:
        since, until = min(days), max(days)
    template = resources.files("funnelpulse.models").joinpath("session_funnel.sql").read_text()
    unit = "user_id" if spec.by_user else "user_session"
    held = BREAKDOWNS[spec.by][0] if spec.by else "CAST(NULL AS VARCHAR)"
    grains = {
        "total": ("CAST(NULL AS DATE)", "CAST(NULL AS DATE)", ""),
        "date": ("CAST(entry_time AS DATE)", "event_date", "grain AS date, "),
        "hour": (
            "DATE_TRUNC('hour', entry_time)",
            "DATE_TRUNC('hour', event_time)",
            "grain AS hour, ",
        ),
    }
    if grain not in grains:
        raise ConfigError(f"Unknown funnel grain {grain!r}. Use total, date or hour")
    actor_grain, event_grain, output = grains[grain]
    if spec.key_column:
        output += f"held AS {spec.key_column}, "
    step_high = until + timedelta(days=spec.window_days) if until else None
    # With a start date, only units that viewed in the range need their first view looked up.
    recent = (
        f"AND {unit} IN (SELECT unit FROM events WHERE event_type = 'view' AND "
        f"{_between('event_date', since, until)})"
        if since
        else ""
    )
    values = {
        "unit": unit,
        "held": held,
        "product": "product_id" if spec.same_product else "CAST(0 AS BIGINT)",
        "window_seconds": str(int(spec.window_seconds)),
        "view_dates": _between("event_date", None, until),
        "step_dates": _between("event_date", since, step_high),
        "entry_dates": _between("CAST(entry_time AS DATE)", since, until),
        "entry_event_dates": _between("event_date", since, until),
        "recent_units": recent,
        "actor_grain": actor_grain,
        "event_grain": event_grain,
        "grain_label": grain,
        "output_columns": output,
        "missing_column": f"events_without_{spec.unit_name}",
    }
    if days is not None:
        steps = frozenset(d + timedelta(k) for d in days for k in range(spec.window_days + 1))
        values["step_dates"] = _within("event_date", steps)
        values["entry_dates"] = _within("CAST(entry_time AS DATE)", days)
        values["entry_event_dates"] = _within("event_date", days)
        values["recent_units"] = (
            f"AND {unit} IN (SELECT unit FROM events WHERE event_type = 'view' AND "
            f"{_within('event_date', days)})"
        )
    return template.format(**values)


def actors_sql(spec: FunnelSpec, since: date | None = None, until: date | None = None) -> str:
    """One row per funnel entrant (entry, cart and purchase times) from the same SQL: its
    `actors` step, for distributions the aggregate cannot show."""
    sql = render(spec, since, until)
    head = sql[: sql.index("\nfunnel AS (")].rstrip().rstrip(",")
    return (
        f"{head}\nSELECT held AS {spec.key_column or 'held'}, entry_time, cart_time, "
        "purchase_time, seconds_to_cart, seconds_to_purchase FROM actors"
    )


def actors(
    warehouse: str,
    spec: FunnelSpec,
    since: date | None = None,
    until: date | None = None,
    memory_mb: int | None = DEFAULT_MEMORY_MB,
) -> pa.Table:
    """Every entrant of the funnel with its step times (for time-to-convert distributions)."""
    with bounded_connection(warehouse, memory_mb) as con:
        con.register("silver_events", silver_dataset(warehouse))
        return con.sql(actors_sql(spec, since, until)).to_arrow_table()


@dataclass
class FunnelResult:
    """The funnel as plain rows, with what it was asked for."""

    spec: FunnelSpec
    since: date | None
    until: date | None
    rows: list[dict[str, Any]]
    data_range: tuple[date, date] | None = None  # first and last date of silver_events

    @property
    def events_without_unit(self) -> int:
        return sum(r[f"events_without_{self.spec.unit_name}"] for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": self.spec.unit_name,
            "window": format_window(self.spec.window_seconds),
            "by": self.spec.by,
            "same_product": self.spec.same_product,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            f"events_without_{self.spec.unit_name}": self.events_without_unit,
            "rows": self.rows,
        }


def spill_parent(warehouse: str) -> str | None:
    """Where a capped query spills: the warehouse's own `_funnelpulse` folder when it is a local
    folder (the disk that holds the data), else the system temp folder (None)."""
    from .locks import META

    if "://" in warehouse and not warehouse.startswith("file://"):
        return None
    meta = Path(warehouse.removeprefix("file://"), META)
    return str(meta) if meta.is_dir() else None


def _spill_folder(warehouse: str) -> str:
    """A private spill folder: beside the data, or in the system temp folder when the warehouse
    is read-only (reading a warehouse never needs to write to it)."""
    try:
        return tempfile.mkdtemp(prefix="spill-", dir=spill_parent(warehouse))
    except OSError:
        return tempfile.mkdtemp(prefix="funnelpulse-spill-")


@contextmanager
def bounded_connection(warehouse: str, memory_mb: int | None) -> Iterator[Any]:
    """A DuckDB connection held to `memory_mb` MB (None: DuckDB's default, 80 % of RAM) that
    spills to a private folder removed on close: the joins over every session outgrow RAM."""
    import duckdb

    from .localdb import connect

    con = connect()
    spill = _spill_folder(warehouse) if memory_mb else None
    try:
        if spill:
            con.execute(f"SET memory_limit='{int(memory_mb or 0)}MB'")
            con.execute("SET temp_directory = ?", [spill])
        yield con
    except duckdb.OutOfMemoryException as exc:
        raise FunnelPulseError(
            f"The session funnel needs more memory than funnel_memory_mb = {memory_mb} MB allows "
            "(not all of its work can wait on disk). Raise funnel_memory_mb"
        ) from exc
    finally:
        con.close()
        if spill:
            shutil.rmtree(spill, ignore_errors=True)


def silver_dataset(warehouse: str) -> Any:
    path = tables.table_path(warehouse, tables.SILVER)
    if not tables.exists(path):
        raise WarehouseError(
            f"No silver_events table in {warehouse}. Run `funnelpulse build` first"
        )
    return tables.dataset(path)


def query(
    warehouse: str,
    spec: FunnelSpec,
    since: date | None = None,
    until: date | None = None,
    grain: str = "total",
    memory_mb: int | None = DEFAULT_MEMORY_MB,
    silver: Any = None,
) -> FunnelResult:
    """Compute the funnel from silver now (DuckDB), so any window or breakdown needs no rebuild.

    `silver`: the silver_events dataset to read (queries.funnel pins its version); default: the
    table as it is now."""
    if since and until and since > until:
        raise ConfigError(f"--since {since} is after --until {until}. Swap them")
    with bounded_connection(warehouse, memory_mb) as con:
        con.register("silver_events", silver if silver is not None else silver_dataset(warehouse))
        table = con.sql(render(spec, since, until, grain)).to_arrow_table()
        first, last = con.execute(
            "SELECT min(event_date), max(event_date) FROM silver_events"
        ).fetchone()
    order = [c for c in ("date", "hour") if c in table.column_names]
    rows = table.to_pylist()
    rows.sort(key=lambda r: (*[r[c] for c in order], -r["sessions"], str(r.get(spec.key_column))))
    return FunnelResult(spec, since, until, rows, (first, last) if first else None)


def rebuild_range(dates: Any, present: list[date]) -> tuple[date, date] | None:
    """Entry dates a silver rebuild of `dates` can change: one window either side (a session is
    counted on its entry date, its cart may fall on the next day). None: nothing to build."""
    if not present:
        return None
    pad = timedelta(days=FunnelSpec().window_days)
    low = dates.since - pad if dates.since else min(present)
    high = dates.until + pad if dates.until else max(present)
    return low, high


def gold_sql(
    by: str | None, low: date | None, high: date | None, days: frozenset[date] | None = None
) -> str:
    """The SQL of one gold_session_funnel_daily* table for entry dates low..high (or `days`)."""
    return render(FunnelSpec(by=by), low, high, grain="date", days=days)


def _silver_dates(warehouse: str) -> list[date]:
    from .engines.base import DateRange, rows_per_date

    return sorted(rows_per_date(silver_dataset(warehouse), DateRange()))


def rebuild_plan(
    warehouse: str, dates: Any
) -> tuple[date | None, date | None, frozenset[str] | None]:
    """SQL date bounds and the partitions to replace (None: replace the whole table)."""
    span = rebuild_range(dates, _silver_dates(warehouse))
    if dates.is_all or span is None:
        return None, None, None
    low, high = span
    days = frozenset((low + timedelta(d)).isoformat() for d in range((high - low).days + 1))
    return low, high, days


def entry_dates(dates: Any) -> frozenset[date] | None:
    """The entry dates a silver rebuild of an explicit set of dates can change: one window
    either side of each (see rebuild_range). None: the dates are a range, not a set."""
    if getattr(dates, "only", None) is None:
        return None
    pad = FunnelSpec().window_days
    return frozenset(d + timedelta(k) for d in dates.only for k in range(-pad, pad + 1))


# The silver columns the session funnel SQL reads.
_FUNNEL_COLUMNS = (
    "user_session, user_id, brand_norm, category_root, price_band, product_id, "
    "event_type, event_time, price, event_date"
)


def _load_entry_dates(con: Any, days: frozenset[date]) -> None:
    """`silver_events` as a temp table that holds what the funnel SQL reads for entries on
    `days`: every event of those dates and of the days their windows reach, and the earlier
    views of the sessions that viewed on them (where their first view may lie). The rest of
    silver cannot change those entry dates' rows, so the first-view lookup reads three columns
    of it once, instead of all of it for each table."""
    steps = frozenset(d + timedelta(k) for d in days for k in range(FunnelSpec().window_days + 1))
    near = days | steps
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE touched AS
        SELECT DISTINCT user_session FROM silver_all
        WHERE event_type = 'view' AND user_session IS NOT NULL AND {_within("event_date", days)}
        """
    )
    earlier = frozenset(
        row[0]
        for row in con.execute(
            f"""
            SELECT DISTINCT event_date FROM silver_all
            WHERE event_type = 'view' AND event_date <= {_day(max(days))}
                AND NOT {_within("event_date", near)}
                AND user_session IN (SELECT user_session FROM touched)
            """
        ).fetchall()
    )
    views = (
        f"""
        UNION ALL
        SELECT {_FUNNEL_COLUMNS} FROM silver_all
        WHERE {_within("event_date", earlier)} AND event_type = 'view'
            AND user_session IN (SELECT user_session FROM touched)
        """
        if earlier
        else ""
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE silver_events AS
        SELECT {_FUNNEL_COLUMNS} FROM silver_all WHERE {_within("event_date", near)} {views}
        """
    )


# The silver columns the gold session funnels read (session per event, no product held).
_GOLD_COLUMNS = "brand_norm, category_root, price_band, event_type, event_time, price, event_date"


def _load_numbered(con: Any) -> None:
    """`silver_events` as a temp table of what the four gold funnels read, read from silver once
    for all four, with each session id replaced by a number: one number per distinct id (none
    shared, NULL stays NULL), so every join and grouping on the session compares integers
    instead of 36-character texts, with the same result (the id itself is never output)."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE silver_events AS
        WITH numbered AS (
            SELECT user_session, row_number() OVER () AS session_number
            FROM (SELECT DISTINCT user_session FROM silver_all WHERE user_session IS NOT NULL)
        )
        SELECT {_GOLD_COLUMNS}, n.session_number AS user_session
        FROM silver_all LEFT JOIN numbered AS n USING (user_session)
        """
    )


def build_gold_duckdb(
    warehouse: str, dates: Any, progress: Progress, memory_mb: int | None = DEFAULT_MEMORY_MB
) -> dict[str, int]:
    """Write the four gold_session_funnel_daily* tables from silver with DuckDB."""
    days = entry_dates(dates)
    low: date | None
    high: date | None
    replace: frozenset[str] | None
    if days is not None:
        low, high, replace = min(days), max(days), frozenset(d.isoformat() for d in days)
    else:
        low, high, replace = rebuild_plan(warehouse, dates)
    written: dict[str, int] = {}
    with bounded_connection(warehouse, memory_mb) as con:
        if days is not None:
            con.register("silver_all", silver_dataset(warehouse))
            progress.step("Reading the sessions of the rebuilt dates")
            _load_entry_dates(con, days)
        elif dates.is_all:
            from .localdb import register_table

            register_table(con, "silver_all", silver_dataset(warehouse))
            progress.step("Reading the sessions of silver_events")
            _load_numbered(con)
        else:
            con.register("silver_events", silver_dataset(warehouse))
        for name, by in GOLD_FUNNELS.items():
            progress.step(f"Building {name}")
            data = con.sql(gold_sql(by, low, high, days)).to_arrow_table()
            written[name] = tables.write(
                tables.table_path(warehouse, name),
                data,
                partition_by=[GOLD_PARTITION],
                replace=None if replace is None else tables.Partitions(GOLD_PARTITION, replace),
            )
    return written


def read_gold(warehouse: str, name: str = GOLD_SESSION_FUNNEL) -> pa.Table:
    path = tables.table_path(warehouse, name)
    if not tables.exists(path):
        raise WarehouseError(
            f"Table {name} not found in {warehouse}. Run `funnelpulse build` first"
        )
    return tables.read(path)


def format_duration(seconds: float | None) -> str:
    """1h 05m, 3m 20s, 45s: times to convert a person can read."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3_600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < DAY_SECONDS:
        return f"{s // 3_600}h {s % 3_600 // 60:02d}m"
    return f"{s // DAY_SECONDS}d {s % DAY_SECONDS // 3_600:02d}h"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_text(result: FunnelResult) -> str:
    """The funnel as a table a person can read."""
    spec = result.spec
    unit = f"{spec.unit_name}s"
    held = [spec.by or "", "product" if spec.same_product else ""]
    data_first, data_last = result.data_range or (None, None)
    since, until = result.since or data_first, result.until or data_last
    span = f"{since} to {until}" if since and until else "(no data)"
    lines = [
        f"Ordered funnel view -> cart -> purchase, {unit} by entry date {span}, "
        f"window {format_window(spec.window_seconds)}"
        + (f", held constant: {' and '.join(h for h in held if h)}" if any(held) else "")
    ]
    if not spec.by:
        row = result.rows[0] if result.rows else {m: None for m in MEASURES}
        entered = row["sessions"] or 0
        lines += [
            f"  {'step':<10}{unit:>12}{'of previous':>13}{'of entered':>12}{'dropped':>10}",
            f"  {'viewed':<10}{entered:>12,}",
        ]
        previous = entered
        for step in ("carted", "purchased"):
            count = row[step] or 0
            lines.append(
                f"  {step:<10}{count:>12,}{_pct(count / previous if previous else None):>13}"
                f"{_pct(count / entered if entered else None):>12}{previous - count:>10,}"
            )
            previous = count
        lines += [
            f"  cart abandonment {_pct(row['cart_abandonment_rate'])}; revenue of completed "
            f"funnels {row['revenue'] or 0:,.2f}",
            f"  time view -> cart: median {format_duration(row['median_seconds_to_cart'])}, "
            f"p90 {format_duration(row['p90_seconds_to_cart'])}; cart -> purchase: median "
            f"{format_duration(row['median_seconds_cart_to_purchase'])}, "
            f"p90 {format_duration(row['p90_seconds_cart_to_purchase'])}",
        ]
    else:
        key = spec.key_column or ""
        names = ["(unknown)" if r[key] is None else str(r[key]) for r in result.rows]
        width = max([21, len(key), *(len(n) for n in names)]) + 1
        header = (
            f"  {key:<{width}}{unit:>10}{'carted':>9}{'bought':>8}{'->cart':>8}{'->buy':>8}"
            f"{'conv':>7}{'aband':>7}{'to cart':>9}{'to buy':>9}{'revenue':>13}"
        )
        lines.append(header)
        for r in result.rows:
            name = "(unknown)" if r[key] is None else str(r[key])
            lines.append(
                f"  {name:<{width}}{r['sessions']:>10,}{r['carted']:>9,}{r['purchased']:>8,}"
                f"{_pct(r['view_to_cart_rate']):>8}{_pct(r['cart_to_purchase_rate']):>8}"
                f"{_pct(r['conversion_rate']):>7}{_pct(r['cart_abandonment_rate']):>7}"
                f"{format_duration(r['median_seconds_to_cart']):>9}"
                f"{format_duration(r['median_seconds_cart_to_purchase']):>9}{r['revenue']:>13,.2f}"
            )
        lines.append(
            f"  ({unit} are counted once per {spec.by}"
            + (" and product" if spec.same_product else "")
            + " they viewed; times are medians)"
        )
    if spec.same_product and not spec.by:
        lines.append(f"  ({unit} are counted once per product they viewed)")
    if not any(r["sessions"] for r in result.rows):
        lines.append(
            f"  No {unit} entered in this range: the warehouse has events from {data_first} to "
            f"{data_last}. Pick dates in that range (--since/--until)"
            if result.data_range
            else "  No events in silver_events yet: ingest files and run `funnelpulse build`"
        )
    missing = result.events_without_unit
    lines.append(
        f"  {missing:,} events had no {'user' if spec.by_user else 'session'} id and are not "
        "counted in the funnel"
    )
    return "\n".join(lines)


def format_csv(result: FunnelResult) -> str:
    import csv
    import io

    out = io.StringIO()
    if result.rows:
        writer = csv.DictWriter(out, fieldnames=list(result.rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(result.rows)
    return out.getvalue()
