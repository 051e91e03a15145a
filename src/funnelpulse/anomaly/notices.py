"""The notices an alert run owes: each incident's opening to the sinks it is routed to, then its
acknowledgement and resolution (to the sinks that got the opening), and which are held back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ..config import Settings
from .incidents import Detected
from .routes import forced_sinks, route
from .sink_base import notice_id
from .sinks import plain
from .workflow import Decision, active_mutes, decisions, held_back


@dataclass(frozen=True)
class Planned:
    incident: Detected
    notice: Detected  # the incident under the notice's journal id
    kind: str  # open | acknowledged | resolved
    sink: str
    held: str | None  # why an opening is held back now (mute, maintenance window)
    resolved: bool  # the incident is over (by the data or by hand)
    decision: Decision | None = None


def batch_resolved(incident: Detected, as_of: datetime | None, after_h: int) -> bool:
    """A batch incident is over once its segment scored normal for `after_h` hours of data."""
    return as_of is not None and as_of - incident.end >= timedelta(hours=after_h)


def plan(
    incidents: Sequence[Detected],
    settings: Settings,
    forced: Sequence[str] | None,
    actions: list[dict[str, Any]],
    as_of: datetime | None,
    now: datetime,
) -> list[Planned]:
    """Openings first, then acknowledgements, then resolutions (each needs the one before)."""
    mutes = active_mutes(actions, now)
    decided = decisions(actions)
    forced = forced_sinks(forced, settings.alert_sinks)
    openings, later = [], []
    for incident in incidents:
        sinks = route(incident, settings.routes, settings.alert_sinks, forced).sinks
        by_hand = decided.get(incident.incident_id, {})
        over = "resolve" in by_hand or batch_resolved(incident, as_of, settings.resolve_after_h)
        held = held_back(incident, mutes, settings.silences, now)
        for name in sinks:
            openings.append(Planned(incident, incident, "open", name, held, over))
        follow: list[tuple[str, Decision | None]] = []
        if "acknowledge" in by_hand:
            follow.append(("acknowledged", by_hand["acknowledge"]))
        if over:
            follow.append(("resolved", by_hand.get("resolve")))
        for kind, decision in follow:
            notice = replace(incident, incident_id=notice_id(incident.incident_id, kind))
            for name in sinks:
                later.append(Planned(incident, notice, kind, name, None, over, decision))
    return openings + later


def text(item: Planned, opening: str, settings: Settings) -> str:
    """The message of a notice (`opening` is the incident's own message)."""
    i = item.incident
    where = f"{i.dimension} {plain(i.segment)} incident since {i.start:%Y-%m-%d %H:%M} UTC"
    d = item.decision
    note = f": {plain(d.note)}" if d and d.note else ""
    if item.kind == "acknowledged" and d:
        return f"[ACKNOWLEDGED] {where}, by {plain(d.by)} at {d.at:%Y-%m-%d %H:%M} UTC{note}."
    if item.kind == "resolved":
        word = "lost" if i.lost_purchases >= 0 else "extra"
        loss = (
            f" Estimated {word} purchases {abs(i.lost_purchases):,.1f}, "
            f"revenue {abs(i.lost_revenue):,.2f}."
        )
        if d:
            return (
                f"[RESOLVED] {where}: resolved by {plain(d.by)} at {d.at:%Y-%m-%d %H:%M} UTC"
                f"{note}.{loss}"
            )
        return (
            f"[RESOLVED] {where}: scores normal again since {i.end:%Y-%m-%d %H:%M} UTC "
            f"({settings.resolve_after_h} h without an anomaly).{loss}"
        )
    return opening
