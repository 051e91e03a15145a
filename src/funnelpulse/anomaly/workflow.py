"""What people do with incidents: acknowledge, resolve, mute and unmute, recorded with who and when.

Each action is one row of the `incident_actions` table, appended under the warehouse's alert
lock, so an action and the alert runs never interleave. The alert job reads the actions: an
acknowledged or resolved incident gets its acknowledge/resolve notice (once per sink that got
its opening), and an incident that matches an active mute or maintenance window is recorded as
`muted` in the `alerts` table and not sent; once the mute ends, an incident still open is sent,
once, by the next alert run.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from .. import tables
from ..alert_policy import Matchers, Silence
from ..errors import InputError
from .incidents import Detected

ACTION_SCHEMA = pa.schema(
    [
        ("action", pa.string()),  # acknowledge | resolve | mute | unmute
        ("incident_id", pa.string()),  # acknowledge, resolve
        ("segment", pa.string()),  # mute, unmute: dimension:value
        ("step", pa.string()),  # mute: only this step (null: every step)
        ("until", pa.timestamp("us", tz="UTC")),  # mute: when it ends
        ("note", pa.string()),
        ("by", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)
ACTIONS = ("acknowledge", "resolve", "mute", "unmute")
_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86_400}


def who() -> str:
    """The person an action is recorded for: FUNNELPULSE_USER, else the login name."""
    name = os.environ.get("FUNNELPULSE_USER", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def parse_duration(text: str) -> timedelta:
    """`90m`, `2h`, `1d` (or a combination such as `1h30m`) as a timedelta."""
    total, number = 0, ""
    for char in text.strip().lower():
        if char.isdigit():
            number += char
        elif char in _DURATION_UNITS and number:
            total += int(number) * _DURATION_UNITS[char]
            number = ""
        else:
            number = "x"
            break
    if number or total <= 0:
        raise InputError(f"--for {text!r} is not a duration. Write it like 30m, 2h or 1d")
    return timedelta(seconds=total)


def split_segment(segment: str) -> tuple[str, str]:
    """`brand:acme` -> (brand, acme); refused without a dimension."""
    dimension, sep, value = segment.partition(":")
    if not sep or not dimension or not value:
        raise InputError(
            f"Segment {segment!r} must be written dimension:value, e.g. brand:acme or shop:all"
        )
    return dimension, value


# ---- the table ---------------------------------------------------------------------------


def read_actions(warehouse: str) -> list[dict[str, Any]]:
    path = tables.table_path(warehouse, tables.INCIDENT_ACTIONS)
    return tables.read(path).to_pylist() if tables.exists(path) else []


def record_action(warehouse: str, **row: Any) -> dict[str, Any]:
    """Append one action (the caller holds the alert lock)."""
    full = {name: row.get(name) for name in ACTION_SCHEMA.names}
    full["by"] = full["by"] or who()
    full["at"] = full["at"] or datetime.now(UTC)
    tables.write(
        tables.table_path(warehouse, tables.INCIDENT_ACTIONS),
        pa.Table.from_pylist([full], schema=ACTION_SCHEMA),
        replace=(),
    )
    return full


# ---- what the actions mean ---------------------------------------------------------------


@dataclass(frozen=True)
class Mute:
    segment: str
    step: str | None
    until: datetime
    note: str
    by: str
    at: datetime

    def covers(self, incident: Detected) -> bool:
        if f"{incident.dimension}:{incident.segment}" != self.segment:
            return False
        return self.step is None or self.step in incident.steps

    def label(self) -> str:
        step = f" {self.step}" if self.step else ""
        return f"muted {self.segment}{step} until {self.until:%Y-%m-%d %H:%M} UTC by {self.by}"


def active_mutes(actions: list[dict[str, Any]], now: datetime) -> list[Mute]:
    """Mutes not yet expired and not undone by a later unmute of the same segment (and step)."""
    mutes: list[Mute] = []
    for row in sorted(actions, key=lambda r: r["at"]):
        if row["action"] == "mute":
            mutes.append(
                Mute(
                    row["segment"],
                    row["step"],
                    row["until"],
                    row["note"] or "",
                    row["by"],
                    row["at"],
                )
            )
        elif row["action"] == "unmute":
            mutes = [
                m
                for m in mutes
                if m.segment != row["segment"] or (row["step"] and m.step != row["step"])
            ]
    return [m for m in mutes if m.until > now]


def held_back(
    incident: Detected, mutes: list[Mute], silences: tuple[Silence, ...], now: datetime
) -> str | None:
    """Why the incident's opening is held back now (a mute or a maintenance window), or None."""
    for mute in mutes:
        if mute.covers(incident):
            return mute.label()
    drop = any("drop" in t for t in incident.types)
    for silence in silences:
        if silence.active(now) and silence.match.matches(
            incident.severity, incident.dimension, incident.segment, incident.steps, drop
        ):
            return silence.label()
    return None


@dataclass(frozen=True)
class Decision:
    kind: str  # acknowledge | resolve
    by: str
    at: datetime
    note: str


def decisions(actions: list[dict[str, Any]]) -> dict[str, dict[str, Decision]]:
    """incident id -> {"acknowledge": first ack, "resolve": first resolve}."""
    out: dict[str, dict[str, Decision]] = {}
    for row in sorted(actions, key=lambda r: r["at"]):
        if row["action"] in ("acknowledge", "resolve") and row["incident_id"]:
            out.setdefault(row["incident_id"], {}).setdefault(
                row["action"], Decision(row["action"], row["by"], row["at"], row["note"] or "")
            )
    return out


def incident_matchers(incident: Detected) -> dict[str, Any]:
    """The values a route or silence matches an incident by (for explanations)."""
    return {
        "severity": incident.severity,
        "dimension": incident.dimension,
        "segment": f"{incident.dimension}:{incident.segment}",
        "steps": incident.steps,
        "direction": "drops" if any("drop" in t for t in incident.types) else "spikes",
    }


__all__ = [
    "ACTIONS",
    "ACTION_SCHEMA",
    "Decision",
    "Matchers",
    "Mute",
    "active_mutes",
    "decisions",
    "held_back",
    "parse_duration",
    "read_actions",
    "record_action",
    "split_segment",
    "who",
]
