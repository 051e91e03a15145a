"""Text and JSON for `funnelpulse incidents`: the list, one incident, its route."""

from __future__ import annotations

import json
from typing import Any

from .anomaly.incident_book import IncidentView
from .anomaly.sinks import plain


def _duration(view: IncidentView) -> str:
    minutes = (view.incident.end - view.incident.start).total_seconds() / 60
    return f"{minutes / 60:.0f} h" if minutes >= 120 else f"{minutes:.0f} min"


def as_dict(view: IncidentView) -> dict[str, Any]:
    i = view.incident
    return {
        "id": i.incident_id,
        "source": view.source,
        "state": view.state,
        "why": view.why,
        "severity": i.severity,
        "segment": f"{i.dimension}:{i.segment}",
        "segments": i.segments or [i.root],
        "drivers": i.drivers,
        "steps": i.steps,
        "types": i.types,
        "start": i.start.isoformat(),
        "end": i.end.isoformat(),
        "lost_purchases": round(i.lost_purchases, 1),
        "lost_revenue": round(i.lost_revenue, 2),
        "actions": {
            k: {"by": d.by, "at": d.at.isoformat(), "note": d.note}
            for k, d in view.decisions.items()
        },
        "deliveries": view.deliveries,
    }


def format_list(views: list[IncidentView], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([as_dict(v) for v in views], indent=2)
    if not views:
        return "No incidents."
    width = max(40, *(len(plain(v.incident_id)) for v in views))
    lines = [f"{'id':<{width}} {'state':<13} {'severity':<9} {'since (UTC)':<17} {'for':>7}  what"]
    for v in views:
        i = v.incident
        kinds = dict.fromkeys(t.removeprefix("traffic_") for t in i.types)  # the step says traffic
        what = f"{i.dimension}:{plain(i.segment)} {','.join(i.steps)} {','.join(kinds)}"
        others = len([s for s in i.segments if s != i.root])
        if others:
            what += f" (+{others} segment{'s' if others != 1 else ''})"
        lines.append(
            f"{plain(i.incident_id):<{width}} {v.state:<13} {i.severity:<9} "
            f"{i.start:%Y-%m-%d %H:%M}  {_duration(v):>7}  {what}"
        )
    return "\n".join(lines)


def format_show(view: IncidentView, route_lines: list[str]) -> str:
    i = view.incident
    state = view.state + (f" ({view.why})" if view.why else "")
    lines = [
        f"Incident {plain(i.incident_id)} ({view.source})",
        f"  state:    {state}",
        f"  severity: {i.severity}",
        f"  segment:  {i.dimension}:{plain(i.segment)}",
        f"  moved:    {', '.join(plain(s) for s in i.segments or [i.root])}",
        f"  steps:    {', '.join(i.steps)} ({', '.join(i.types)})",
        f"  from:     {i.start:%Y-%m-%d %H:%M} UTC to {i.end:%Y-%m-%d %H:%M} UTC ({_duration(view)})",
        f"  loss:     {i.lost_purchases:,.1f} purchases, revenue {i.lost_revenue:,.2f}",
    ]
    for kind, d in view.decisions.items():
        note = f": {plain(d.note)}" if d.note else ""
        lines.append(f"  {kind}d by {plain(d.by)} at {d.at:%Y-%m-%d %H:%M} UTC{note}")
    lines.append("  route:    " + "; ".join(route_lines))
    if view.deliveries:
        lines.append("  deliveries:")
        lines += [f"    {plain(k)}: {s}" for k, s in view.deliveries.items()]
    else:
        lines.append("  deliveries: none yet")
    return "\n".join(lines)
