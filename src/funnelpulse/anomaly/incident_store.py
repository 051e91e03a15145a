"""The lasting `incidents` table, batch and live: one row per real event.

An incident's id is fixed when it first fires (its root segment, step, kind and first hour, see
`incidents.incident_key`) and never recomputed: when later data extends or regroups it, the
new grouping is matched to the stored incident it overlaps (in time, in a segment it hit, in
what it says happened) and takes that incident's id. The id is the alerts' idempotency key, so
an incident extended by the next run, or found live and then in the final hours, is never
announced twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from .. import tables
from ..contract import INCIDENTS_SCHEMA
from ..warehouse import writer_lock
from .incidents import Detected, effects

TOUCH = timedelta(hours=1)  # incidents this close in time can be the same event


def read(warehouse: str) -> list[dict[str, Any]]:
    path = tables.table_path(warehouse, tables.INCIDENTS)
    return tables.read(path).to_pylist() if tables.exists(path) else []


def as_detected(row: dict[str, Any]) -> Detected:
    """A stored incident as the alerts and the incident commands see it."""
    dimension, _, segment = row["root"].partition(":")
    kind = row["kind"] or ""
    return Detected(
        incident_id=row["incident_id"],
        dimension=dimension,
        segment=segment,
        start=row["started_at"],
        end=row["ended_at"],
        steps=[row["step"]] if row["step"] else [],
        types=[f"traffic_{kind}" if row["step"] == "traffic" else kind],
        severity=row["severity"],
        worst_z=row["z"] or 0.0,
        lost_purchases=row["lost_purchases"] or 0.0,
        lost_revenue=row["lost_revenue"] or 0.0,
        anomaly_ids=json.loads(row["anomaly_ids"] or "[]"),
        first_hour=row["first_hour"],
        segments=json.loads(row["segments"] or "[]"),
        drivers=json.loads(row["drivers"] or "[]"),
        step=row["step"] or "",
        kind=kind,
        effects=[e for e in (row["effects"] or "").split(",") if e],
    )


def _effects(i: Detected) -> set[str]:
    if i.effects:
        return set(i.effects)
    kind = i.kind or ("drop" if any(t.endswith("drop") for t in i.types) else "spike")
    return set().union(*(effects(step, kind) for step in i.steps or [i.step]))


def _same_event(stored: dict[str, Any], found: Detected) -> bool:
    overlaps = (
        stored["started_at"] <= found.end + TOUCH and found.start <= stored["ended_at"] + TOUCH
    )
    shared = set(json.loads(stored["segments"] or "[]")) & set(found.segments or [found.root])
    said = set((stored["effects"] or "").split(",")) & _effects(found)
    return overlaps and bool(shared) and bool(said)


def assign_ids(stored: Sequence[dict[str, Any]], found: Sequence[Detected]) -> dict[str, str]:
    """New incident id -> the stored id it continues (the earliest stored incident it is)."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for incident in sorted(found, key=lambda i: i.start):
        match = sorted(
            (r for r in stored if r["incident_id"] not in taken and _same_event(r, incident)),
            key=lambda r: (r["first_recorded_at"], r["started_at"]),
        )
        if match:
            out[incident.incident_id] = match[0]["incident_id"]
            taken.add(match[0]["incident_id"])
    return out


def record(
    warehouse: str,
    found: Sequence[Detected],
    *,
    source: str = "batch",
    latest: datetime | None = None,
    forget_from: datetime | None = None,
) -> list[Detected]:
    """Give `found` their lasting ids (see module doc), write them, and return them.

    `latest` (the end of the data scored) decides open or resolved. A batch run over everything
    from `forget_from` on also drops the stored batch incidents of those hours it no longer finds.
    """
    # read, match and write under the writer lock: the stream and detect never lose each
    # other's incidents (the lock is re-entrant, so the write inside takes it again)
    with writer_lock(warehouse):
        return _record(warehouse, found, source, latest, forget_from)


def _record(
    warehouse: str,
    found: Sequence[Detected],
    source: str,
    latest: datetime | None,
    forget_from: datetime | None,
) -> list[Detected]:
    stored = read(warehouse)
    ids = assign_ids(stored, found)
    by_id = {r["incident_id"]: r for r in stored}
    now = datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}
    for incident in found:
        incident.incident_id = ids.get(incident.incident_id, incident.incident_id)
        before = by_id.get(incident.incident_id)
        if before is not None and before.get("source") == "live" and source != "live":
            # what the live path announced keeps its extent unless the final hours widen it
            incident.start = min(incident.start, before["started_at"])
        rows[incident.incident_id] = _row(incident, before, source, latest, now)
    keep = [
        r
        for r in stored
        if r["incident_id"] not in rows
        and not (
            forget_from is not None and r["source"] == "batch" and r["started_at"] >= forget_from
        )
    ]
    table = pa.Table.from_pylist(keep + list(rows.values()), schema=INCIDENTS_SCHEMA)
    tables.write(tables.table_path(warehouse, tables.INCIDENTS), table)
    return list(found)


def _row(
    i: Detected,
    before: dict[str, Any] | None,
    source: str,
    latest: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    segments = list(i.segments or [i.root])
    if before is not None:  # a segment once hit stays listed
        segments += [s for s in json.loads(before["segments"] or "[]") if s not in segments]
    return {
        "incident_id": i.incident_id,
        "root": i.root,
        "step": i.step or (i.steps[0] if i.steps else ""),
        "kind": i.kind or ("drop" if any(t.endswith("drop") for t in i.types) else "spike"),
        "status": _status(i, before, latest),
        "severity": i.severity,
        "started_at": i.start,
        "ended_at": i.end,
        "first_hour": i.first_hour or i.start,
        "segments": json.dumps(segments),
        "drivers": json.dumps(i.drivers, default=float),
        "effects": ",".join(sorted(_effects(i))),
        "z": i.worst_z,
        "lost_purchases": i.lost_purchases,
        "lost_revenue": i.lost_revenue,
        "source": before["source"] if before is not None else source,
        "anomaly_ids": json.dumps(i.anomaly_ids),
        "first_recorded_at": before["first_recorded_at"] if before is not None else now,
        "updated_at": now,
    }


def _status(i: Detected, before: dict[str, Any] | None, latest: datetime | None) -> str:
    """Open while its last hour is the newest scored; without a newest hour, as it was."""
    if latest is None:
        return before["status"] if before is not None else "open"
    return "open" if i.end >= latest else "resolved"
