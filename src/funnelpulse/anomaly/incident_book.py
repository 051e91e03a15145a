"""The incidents of a warehouse with their state, and the acknowledge/resolve/mute actions.

Incidents come from the lasting `incidents` table (batch and live, one per real event, under the
ids the alerts use as keys); batch firings not recorded there yet (an `anomalies` table written
before it) are grouped as the alerts group them and matched to the stored ids. Their state is,
first that applies: resolved (by hand, by the live check, or by `resolve_after_h` hours of
normal data), acknowledged, muted (an active mute or maintenance window), open. Acknowledging or resolving records who and when, then sends the
notice at once to every sink that got the incident's opening (PagerDuty acknowledge/resolve,
Alertmanager endsAt, a message elsewhere), through the same journal and keys as every alert.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import tables
from ..config import Settings
from ..errors import InputError
from ..faults import checkpoint
from . import incident_store
from .alertlog import AlertLog, previous_alerts
from .alerts import RETRY_DELAYS_S, AlertResult, deliver_once
from .incidents import Detected, group_incidents
from .notices import Planned, batch_resolved, text
from .routes import Routing, route
from .sink_base import notice_id, split_notice
from .sink_registry import sink
from .workflow import Decision, active_mutes, decisions, held_back, read_actions, record_action

STATES = ("open", "acknowledged", "muted", "resolved")


@dataclass
class IncidentView:
    incident: Detected
    source: str  # batch | live
    state: str
    why: str = ""  # who/when for acknowledged/resolved, the mute for muted
    decisions: dict[str, Decision] = field(default_factory=dict)
    deliveries: dict[str, str] = field(default_factory=dict)  # notice id @ sink -> last status

    @property
    def incident_id(self) -> str:
        return self.incident.incident_id


def _data_end(warehouse: str) -> datetime | None:
    """The end of the newest hour of data (batch incidents resolve by it)."""
    gold = tables.table_path(warehouse, tables.GOLD_HOURLY_BRAND)
    if not tables.exists(gold):
        return None
    hours = tables.read(gold).column("window_start").to_pylist()
    return max(hours) + timedelta(hours=1) if hours else None


def _known(warehouse: str) -> list[tuple[Detected, str, bool | None]]:
    """Every incident: (incident, source, over) where `over` is None when the data decides."""
    stored = incident_store.read(warehouse)
    out: dict[str, tuple[Detected, str, bool | None]] = {}
    for r in stored:
        live = r["source"] == "live"
        out[r["incident_id"]] = (
            incident_store.as_detected(r),
            r["source"],
            (r["status"] == "resolved") if live else None,
        )
    path = tables.table_path(warehouse, tables.ANOMALIES)
    rows = tables.read(path).to_pylist() if tables.exists(path) else []
    found = group_incidents(rows)
    ids = incident_store.assign_ids(stored, found)
    for incident in found:
        incident.incident_id = ids.get(incident.incident_id, incident.incident_id)
        out.setdefault(incident.incident_id, (incident, "batch", None))
    return list(out.values())


def incident_book(
    warehouse: str, settings: Settings, now: datetime | None = None
) -> list[IncidentView]:
    """Every known incident with its state, newest first."""
    now = now or datetime.now(UTC)
    actions = read_actions(warehouse)
    decided = decisions(actions)
    mutes = active_mutes(actions, now)
    deliveries: dict[str, dict[str, str]] = {}
    for r in sorted(previous_alerts(warehouse), key=lambda r: r["recorded_at"]):
        base = split_notice(r["incident_id"])[0]
        deliveries.setdefault(base, {})[f"{r['incident_id']} @ {r['sink']}"] = r["status"]
    as_of = _data_end(warehouse)
    found = {
        incident.incident_id: (
            incident,
            source,
            batch_resolved(incident, as_of, settings.resolve_after_h) if over is None else over,
        )
        for incident, source, over in _known(warehouse)
    }
    views = []
    for incident_id, (incident, source, over) in found.items():
        mine = decided.get(incident_id, {})
        view = IncidentView(incident, source, "open", decisions=mine)
        view.deliveries = deliveries.get(incident_id, {})
        held = held_back(incident, mutes, settings.silences, now)
        if "resolve" in mine:
            d = mine["resolve"]
            view.state, view.why = "resolved", f"by {d.by} at {d.at:%Y-%m-%d %H:%M} UTC"
        elif over:
            view.state, view.why = "resolved", "scores normal again"
        elif "acknowledge" in mine:
            d = mine["acknowledge"]
            view.state, view.why = "acknowledged", f"by {d.by} at {d.at:%Y-%m-%d %H:%M} UTC"
        elif held:
            view.state, view.why = "muted", held
        views.append(view)
    return sorted(views, key=lambda v: (v.incident.start, v.incident_id), reverse=True)


def find(warehouse: str, settings: Settings, incident_id: str) -> IncidentView:
    views = incident_book(warehouse, settings)
    for view in views:
        if view.incident_id == incident_id:
            return view
    near = [v.incident_id for v in views if incident_id.lower() in v.incident_id.lower()][:3]
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    raise InputError(
        f"No incident {incident_id!r}.{hint} Run `funnelpulse incidents list` for the ids"
    )


def routing_of(view: IncidentView, settings: Settings) -> Routing:
    return route(view.incident, settings.routes, settings.alert_sinks)


def decide(
    warehouse: str,
    settings: Settings,
    incident_id: str,
    action: str,
    note: str = "",
    by: str = "",
    retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
) -> AlertResult:
    """Acknowledge or resolve an incident: record who and when, then tell every sink that got
    its opening (once: a second `ack` records nothing new and only retries a sink that failed)."""
    view = find(warehouse, settings, incident_id)
    kind = {"acknowledge": "acknowledged", "resolve": "resolved"}[action]
    result = AlertResult()
    decision = view.decisions.get(action)
    before = decision is not None
    if decision is None and view.state == "resolved":
        result.skipped += 1  # over already (by the data): nothing to acknowledge or resolve
        return result
    with AlertLog(warehouse) as journal:
        if decision is None:
            row = record_action(
                warehouse, action=action, incident_id=incident_id, note=note or None, by=by or None
            )
            decision = Decision(action, row["by"], row["at"], note)
        # else: recorded before; only the sinks a failed delivery left out are told now
        history = journal.history()
        opened = [
            r["sink"] for r in history if r["incident_id"] == incident_id and r["status"] == "sent"
        ]
        notice = replace(view.incident, incident_id=notice_id(incident_id, kind))
        already = {
            r["sink"]
            for r in history
            if r["incident_id"] == notice.incident_id and r["status"] == "sent"
        }
        for name in dict.fromkeys(opened):
            if name in already:
                result.skipped += 1
                continue
            item = Planned(view.incident, notice, kind, name, None, True, decision)
            ok, error = send_one(
                journal, settings, notice, name, text(item, "", settings), retry_delays_s
            )
            if ok:
                result.count(name, "sent")
                result.updates += 1
            else:
                result.count(name, "failed")
                result.errors[name] = error or "failed"
    if before and not (result.sent or result.failed):
        result.skipped = max(result.skipped, 1)
    return result


def send_one(
    journal: AlertLog,
    settings: Settings,
    notice: Detected,
    name: str,
    message: str,
    retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
    status: str = "",
    reason: str | None = None,
) -> tuple[bool, str | None]:
    """Deliver one notice to one sink, journalled before and after (the alerts' guarantee);
    with `status` (e.g. muted), only record that status and its `reason`."""
    base = {
        "incident_id": notice.incident_id,
        "sink": name,
        "severity": notice.severity,
        "dimension": notice.dimension,
        "segment": notice.segment,
        "incident_start": notice.start,
        "incident_end": notice.end,
        "message": message,
    }
    if status:
        journal.record(
            base
            | {"status": status, "attempts": 0, "error": reason}
            | {"recorded_at": datetime.now(UTC)}
        )
        return False, None
    journal.record(
        base | {"status": "sending", "attempts": 0, "error": None, "recorded_at": datetime.now(UTC)}
    )
    checkpoint("alerts.notice_before_send")
    send = sink(name, settings, sys.stderr)
    ok, attempts, error = deliver_once(send, notice, message, retry_delays_s, float("inf"), [])
    checkpoint("alerts.notice_after_send")
    journal.record(
        base
        | {"status": "sent" if ok else "failed", "attempts": attempts, "error": error}
        | {"recorded_at": datetime.now(UTC)}
    )
    return ok, error


def mute(
    warehouse: str,
    segment: str,
    step: str | None,
    duration: timedelta,
    note: str = "",
    by: str = "",
) -> dict[str, Any]:
    """Hold back openings of a segment (and step) for `duration` from now."""
    with AlertLog(warehouse):
        return record_action(
            warehouse,
            action="mute",
            segment=segment,
            step=step,
            until=datetime.now(UTC) + duration,
            note=note or None,
            by=by or None,
        )


def unmute(warehouse: str, segment: str, step: str | None, by: str = "") -> int:
    """End the active mutes of a segment (and step); returns how many ended."""
    now = datetime.now(UTC)
    with AlertLog(warehouse):
        actions = read_actions(warehouse)
        ending = [
            m
            for m in active_mutes(actions, now)
            if m.segment == segment and (step is None or m.step == step)
        ]
        if ending:
            record_action(warehouse, action="unmute", segment=segment, step=step, by=by or None)
        return len(ending)
