"""Which sinks an incident goes to: the `[[routes]]` of the config, in order, like Alertmanager."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..alert_policy import Route
from .incidents import Detected


@dataclass(frozen=True)
class Routing:
    sinks: tuple[str, ...]
    matched: tuple[Route, ...]  # empty: the default route (alert_sinks)
    forced: bool = False  # --sink given: routes bypassed


def route(
    incident: Detected,
    routes: Sequence[Route],
    default: Sequence[str],
    forced: Sequence[str] | None = None,
) -> Routing:
    """The sinks of an incident: `forced` (--sink) wins; else every route matched in order up to
    the first without `continue`; else the default sinks."""
    if forced:
        return Routing(tuple(forced), (), forced=True)
    drop = any("drop" in t for t in incident.types)
    matched: list[Route] = []
    for r in routes:
        if r.match.matches(
            incident.severity, incident.dimension, incident.segment, incident.steps, drop
        ):
            matched.append(r)
            if not r.cont:
                break
    if not matched:
        return Routing(tuple(default), ())
    sinks: list[str] = []
    for r in matched:
        sinks += [s for s in r.sinks if s not in sinks]
    return Routing(tuple(sinks), tuple(matched))


def forced_sinks(sinks: Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...] | None:
    """The sinks a run was told to use (--sink), or None when routing applies.

    The stream hands its sinks on as `alert_sinks` when no --sink was given, so a list equal to
    the configured `alert_sinks` means "no --sink": routes apply.
    """
    if not sinks or tuple(sinks) == tuple(default):
        return None
    return tuple(sinks)


def explain(routing: Routing, default: Sequence[str]) -> list[str]:
    """Lines saying which route(s) the incident took and why."""
    if routing.forced:
        return [f"--sink {', '.join(routing.sinks)}: routes bypassed"]
    if not routing.matched:
        return [f"no route matched: default route to {', '.join(default)} (alert_sinks)"]
    lines = []
    for r in routing.matched:
        tail = ", continue" if r.cont else ""
        lines.append(f"{r.label()}: matched {r.match.describe()} -> {', '.join(r.sinks)}{tail}")
    return lines
