"""`detect` with the seasonal method, incremental: aggregate only the silver dates that changed,
re-score only the dates their counts can move, and leave a table equal to scoring everything.

See detect_state.py for what is recorded and why the re-scored dates are enough.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from .. import faults, tables
from ..config import Settings
from ..console import Progress
from ..contract import ANOMALY_SCHEMA
from ..engines import engine_for
from ..localdb import connect
from . import detect_state, incident_store, scoring
from .annotations import blanks as annotated
from .coverage import blank, gap_mask, gap_spans
from .detect_result import DetectResult, cube_columns, utc_hour
from .incidents import group_incidents
from .rootcause import Cube, explain
from .seasonal_method import seasonal
from .series import build_series, segment_keys
from .session_rates import EVENT_STEP, SESSION_STEPS, add_session_counts


def detect_incremental(
    warehouse: str, settings: Settings, progress: Progress, engine: str, full: bool
) -> Any:

    silver = tables.table_path(warehouse, tables.SILVER)
    blanks = annotated(warehouse)
    key = detect_state.scoring_key(settings, "seasonal", blanks)
    fingerprints = detect_state.silver_fingerprints(warehouse)
    state = None if full else detect_state.read_state(warehouse)
    plan = detect_state.plan(warehouse, state, fingerprints, key, settings)
    floor = settings.min_views * 10
    con = connect()
    try:
        fresh = (
            sorted(fingerprints)
            if plan.full
            else [d.isoformat() for d in plan.changed if d.isoformat() in fingerprints]
        )
        if plan.full:
            progress.step("Aggregating hourly segments")
        elif fresh:
            progress.step(f"Aggregating hourly segments of {len(fresh)} changed date(s)")
        cached = {} if plan.full else plan.cached
        if fresh or plan.full or not cached:
            dates = None if plan.full else [date.fromisoformat(d) for d in fresh]
            engine_for(engine, settings).load_cube(con, silver, None, progress, dates)
            fresh_cube = con.sql("SELECT * FROM cube").to_arrow_table()
            detect_state.write_cube(warehouse, fresh_cube, {d: fingerprints[d] for d in fresh})
        else:
            fresh_cube = detect_state.cube_schema(warehouse, cached).empty_table()
        con.register("cube_cached", detect_state.cube_dataset(warehouse, cached, fresh_cube.schema))
        con.register("cube_fresh", fresh_cube)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE cube_all AS "
            "SELECT * FROM cube_cached UNION ALL SELECT * FROM cube_fresh"
        )
        keys = segment_keys(con, floor, "cube_all")
        everything = plan.full or [list(k) for k in keys] != (state or {}).get("segments")
        whole = build_series(con, floor, ("shop",), table="cube_all")
        gaps = gap_spans(whole.hours, gap_mask(whole))
        as_of = utc_hour(whole.hours[-1]) + timedelta(hours=1) if len(whole.hours) else None
        if everything:
            runs: list[tuple[date, date]] | None = None
            if not plan.full:
                progress.step("The scored segments changed: scoring every hour")
        elif plan.rescore:
            runs = plan.rescore
            days = sum((b - a).days + 1 for a, b in runs)
            progress.step(f"Scoring the {days} date(s) the changes reach")
        else:
            runs = []
            progress.step("Nothing to score: no silver date changed since the last detect")
        rows: list[dict[str, Any]] = []
        for run in [None] if runs is None else runs:
            rows += _score_run(con, warehouse, settings, keys, floor, blanks, run)
    finally:
        con.close()

    path = tables.table_path(warehouse, tables.ANOMALIES)
    replaced: set[str] | None = None
    if runs is not None:
        replaced = {
            (a + timedelta(k)).isoformat() for a, b in runs for k in range((b - a).days + 1)
        } | {d.isoformat() for d in plan.changed}
    kept: list[dict[str, Any]] = []
    if replaced is not None and tables.exists(path):
        evidence = (state or {}).get("evidence", {})
        for r in tables.read(path).to_pylist():
            if r["window_date"].isoformat() in replaced:
                continue
            span = evidence.get(r["anomaly_id"])
            if span:
                r["evidence_start"] = datetime.fromisoformat(span[0])
                r["evidence_end"] = datetime.fromisoformat(span[1])
            kept.append(r)
    if runs is None or replaced:  # (dates that lost all their rows drop their anomalies too)
        progress.step("Writing anomalies")
        tables.write(
            path,
            pa.Table.from_pylist(rows, schema=ANOMALY_SCHEMA),
            partition_by=["window_date"],
            replace=None
            if replaced is None
            else tables.Partitions("window_date", frozenset(replaced)),
        )
        faults.checkpoint("detect.anomalies_committed")
    # In the order scoring everything finds them (step, segment, hour): grouping depends on it.
    steps = ["traffic", *scoring.STEPS, *SESSION_STEPS]
    position = {k: i for i, k in enumerate(keys)}
    every = sorted(
        kept + rows,
        key=lambda r: (
            steps.index(r["step"]),
            position.get((r["dimension"], r["segment"]), len(position)),
            r["window_end"],
        ),
    )
    incidents = group_incidents(every)
    progress.step(f"Recording {len(incidents):,} incidents")
    incident_store.record(
        warehouse, incidents, latest=as_of, forget_from=datetime.min.replace(tzinfo=UTC)
    )
    faults.checkpoint("detect.incidents_committed")
    table = pa.Table.from_pylist(every, schema=ANOMALY_SCHEMA)
    evidence_now = {
        r["anomaly_id"]: [r["evidence_start"].isoformat(), r["evidence_end"].isoformat()]
        for r in every
        if r.get("evidence_start") and r.get("evidence_end")
    }
    return DetectResult(
        "seasonal",
        table,
        len(keys),
        len(whole.hours),
        as_of=as_of,
        incidents=incidents,
        gaps=gaps,
        rows=every,
        record=detect_state.new_state(key, keys, fingerprints, evidence_now),
    )


def _score_run(
    con: Any,
    warehouse: str,
    settings: Settings,
    keys: list[tuple[str, str]],
    floor: int,
    blanks: list[Any],
    run: tuple[date, date] | None,
) -> list[dict[str, Any]]:
    """Score the dates of `run` (None: every hour) with the history they need; their rows."""

    first: date | None = None
    if run is None:
        con.execute("CREATE OR REPLACE TEMP TABLE cube AS SELECT * FROM cube_all")
    else:
        a, b = run
        first = a - timedelta(days=settings.history_days + 11)
        start = datetime.combine(first, time(), UTC)
        end = datetime.combine(b + timedelta(days=2), time(), UTC)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE cube AS SELECT * FROM cube_all "
            f"WHERE hour >= TIMESTAMPTZ '{start.isoformat()}' AND hour < TIMESTAMPTZ '{end.isoformat()}'"
        )
    series = build_series(con, floor, keys=keys, brands_from="cube_all")
    if not len(series.hours):
        return []
    if settings.session_rates:
        series = add_session_counts(
            warehouse,
            series,
            settings.session_window_minutes,
            first,
            settings.funnel_memory_mb or None,
        )
    series = blank(series, blanks)
    scored_from = 0
    if run is not None:
        opened = np.datetime64(datetime.combine(run[0], time()), "us")
        scored_from = max(int((opened - series.hours[0]) // np.timedelta64(1, "h")), 0)
    rows = seasonal(series, settings, scored_from)
    if run is not None:
        rows = [r for r in rows if run[0] <= r["window_date"] <= run[1]]
    if rows:
        # a row's cause compares its window with the same hours on the past history_days days
        since = None
        if run is not None:
            since = datetime.combine(run[0], time(), UTC) - timedelta(
                days=settings.history_days + 1
            )
        cube = Cube(*cube_columns(con, since))
        for r in rows:
            opened = np.datetime64(r["window_start"].replace(tzinfo=None), "us")
            window = opened + np.arange(r["window_hours"]) * np.timedelta64(1, "h")
            step = EVENT_STEP.get(r["step"], r["step"])
            cause = explain(cube, window, settings.history_days, r["dimension"], r["segment"], step)
            if step != r["step"]:  # a session rate: its drivers come from the event counts
                detail = cause["summary"].split(": ", 1)[-1]
                cause["summary"] = f"{r['step']} (drivers from event counts): {detail}"
            r["root_cause"] = json.dumps(cause, default=float)
    return rows
