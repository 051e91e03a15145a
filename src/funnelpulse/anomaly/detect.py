"""`funnelpulse detect`: score every segment-hour and write the anomalies table.

Orchestration only: build the hourly cube (through the engine), score it with one method
(`seasonal_method`, the default, or `reference_method`, the original project's z-score kept for
comparison), explain each anomaly's cause and write the table.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa

from .. import faults, tables
from ..config import Settings
from ..console import Progress, SilentProgress
from ..contract import ANOMALY_SCHEMA, anomaly_id
from ..engines import engine_for
from ..errors import ConfigError, WarehouseError
from ..localdb import connect
from . import incident_store, scoring
from .annotations import blanks as annotated
from .coverage import blank, gap_mask, gap_spans
from .detect_incremental import detect_incremental
from .detect_result import DetectResult
from .detect_result import cube_columns as _cube_columns
from .detect_result import utc_hour as _utc_hour
from .incidents import group_incidents
from .reference_method import reference
from .rootcause import Cube, explain
from .seasonal_method import MIN_CARTS, MIN_REL_CHANGE, MIN_TRAFFIC_CHANGE, seasonal
from .series import build_series
from .session_rates import EVENT_STEP, add_session_counts

__all__ = [
    "ANOMALY_SCHEMA",
    "METHODS",
    "MIN_CARTS",
    "MIN_REL_CHANGE",
    "MIN_TRAFFIC_CHANGE",
    "DetectResult",
    "anomaly_id",
    "detect",
    "seasonal",
]

METHODS = ("seasonal", "reference")


def detect(
    warehouse: str,
    settings: Settings,
    method: str | None = None,
    since: date | None = None,
    progress: Progress | None = None,
    write: bool = True,
    engine: str = "duckdb",
    full: bool = False,
) -> DetectResult:
    """Score every segment-hour. With engine "spark" the heavy step, silver -> hourly segment
    cube, runs on Spark (the cluster); scoring the cube is small and runs here either way.

    The seasonal method, written, is incremental (detect_state.py): it re-scores only the hours
    whose inputs changed since the last detect, and the table equals scoring everything; `full`
    scores everything. `since` scores the hours from that date only (and the next detect is full).
    """
    progress = progress or SilentProgress()
    method = method or settings.detect_method
    if method not in METHODS:
        raise ConfigError(f"Unknown method {method!r}. Use one of: {', '.join(METHODS)}")
    silver = tables.table_path(warehouse, tables.SILVER)
    if not tables.exists(silver):
        raise WarehouseError(f"No silver_events in {warehouse}. Run `funnelpulse build` first")
    if write and method == "seasonal" and since is None:
        return detect_incremental(warehouse, settings, progress, engine, full)
    if write:  # what this run writes is not what the record says was scored
        from . import detect_state

        detect_state.forget(warehouse)
    # Baselines look back history_days; dispersion averages the trailing week of those comparisons.
    lookback = settings.history_days + scoring.DISPERSION_HOURS // 24 + 1
    first = since - timedelta(days=lookback) if since else None
    con = connect()
    try:
        progress.step("Aggregating hourly segments")
        engine_for(engine, settings).load_cube(con, silver, first, progress)
        series = build_series(con, min_total_views=settings.min_views * 10)
        gaps = gap_spans(series.hours, gap_mask(series))
        if settings.session_rates and method == "seasonal":
            progress.step("Counting sessions per entry hour")
            series = add_session_counts(
                warehouse,
                series,
                settings.session_window_minutes,
                first,
                settings.funnel_memory_mb or None,
            )
        # No data is not a drop, and known events are not incidents: both are left out.
        series = blank(series, annotated(warehouse))
        progress.step(f"Scoring ({method})")
        rows = reference(warehouse, con) if method == "reference" else seasonal(series, settings)
        if since:
            cutoff = datetime(since.year, since.month, since.day, tzinfo=UTC)
            rows = [r for r in rows if r["window_start"] >= cutoff]
        if rows and method == "seasonal" and write:
            progress.step(f"Explaining {len(rows):,} anomalies")
            cube = Cube(*_cube_columns(con))
            for r in rows:
                opened = np.datetime64(r["window_start"].replace(tzinfo=None), "us")
                window = opened + np.arange(r["window_hours"]) * np.timedelta64(1, "h")
                step = EVENT_STEP.get(r["step"], r["step"])
                cause = explain(
                    cube, window, settings.history_days, r["dimension"], r["segment"], step
                )
                if step != r["step"]:  # a session rate: its drivers come from the event counts
                    detail = cause["summary"].split(": ", 1)[-1]
                    cause["summary"] = f"{r['step']} (drivers from event counts): {detail}"
                r["root_cause"] = json.dumps(cause, default=float)
    finally:
        con.close()
    table = pa.Table.from_pylist(rows, schema=ANOMALY_SCHEMA)
    incidents = group_incidents(rows)
    as_of = _utc_hour(series.hours[-1]) + timedelta(hours=1) if len(series.hours) else None
    if write:
        progress.step("Writing anomalies")
        replace = None
        if since:
            dates = {r["window_date"].isoformat() for r in rows}
            last = series.hours[-1].astype(datetime).date() if len(series.hours) else since
            days = (last - since).days + 1
            dates |= {(since + timedelta(d)).isoformat() for d in range(max(days, 0))}
            replace = tables.Partitions("window_date", frozenset(dates))
        tables.write(
            tables.table_path(warehouse, tables.ANOMALIES),
            table,
            partition_by=["window_date"],
            replace=replace,
        )
        faults.checkpoint("detect.anomalies_written")  # incidents not recorded yet
        first_day = datetime(since.year, since.month, since.day, tzinfo=UTC) if since else None
        progress.step(f"Recording {len(incidents):,} incidents")
        incident_store.record(
            warehouse,
            incidents,
            latest=as_of,
            forget_from=first_day or datetime.min.replace(tzinfo=UTC),
        )
    return DetectResult(
        method,
        table,
        len(series.segment),
        len(series.hours),
        as_of=as_of,
        incidents=incidents,
        gaps=gaps,
        rows=rows,
    )
