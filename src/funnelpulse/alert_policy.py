"""Where alerts go and when they are held back: the `[[routes]]` and `[[silences]]` of the config.

Pure values and matching, no I/O beyond parsing: the alert job (anomaly/alerts.py) asks which
sinks an incident is routed to and whether a maintenance window holds it back.

A route matches an incident when every matcher it sets matches (severity at least
`min_severity` or one of `severity`, `dimension`, `segment` as `dimension:value`, `step`,
`direction`); routes are tried in order, the first match wins unless it says `continue = true`
(then later routes are tried too, as in Alertmanager); no match sends to `alert_sinks`.
A silence is a maintenance window: a fixed `start`/`end` (UTC), or a daily window `from`/`to`
(HH:MM UTC) on the given `days`, with the same matchers.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from .errors import ConfigError

SEVERITY_ORDER = ("low", "medium", "high", "critical")
DIRECTIONS = ("drops", "spikes", "both")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Matchers:
    """What an incident must be for a route or a silence to apply (an empty field matches all)."""

    severity: tuple[str, ...] = ()
    min_severity: str = ""
    dimension: tuple[str, ...] = ()
    segment: tuple[str, ...] = ()  # dimension:value
    step: tuple[str, ...] = ()
    direction: str = "both"

    def matches(
        self, severity: str, dimension: str, segment: str, steps: Sequence[str], drop: bool
    ) -> bool:
        if self.severity and severity not in self.severity:
            return False
        if self.min_severity and SEVERITY_ORDER.index(severity) < SEVERITY_ORDER.index(
            self.min_severity
        ):
            return False
        if self.dimension and dimension not in self.dimension:
            return False
        if self.segment and f"{dimension}:{segment}" not in self.segment:
            return False
        if self.step and not set(steps) & set(self.step):
            return False
        return not (self.direction == "drops" and not drop) and not (
            self.direction == "spikes" and drop
        )

    def describe(self) -> str:
        parts = [f"severity in {list(self.severity)}"] if self.severity else []
        if self.min_severity:
            parts.append(f"severity >= {self.min_severity}")
        for name in ("dimension", "segment", "step"):
            values = getattr(self, name)
            if values:
                parts.append(f"{name} in {list(values)}")
        if self.direction != "both":
            parts.append(f"direction {self.direction}")
        return ", ".join(parts) or "everything"


@dataclass(frozen=True)
class Route:
    index: int  # 1-based position in the config
    match: Matchers
    sinks: tuple[str, ...]
    cont: bool = False
    name: str = ""

    def label(self) -> str:
        return f"route {self.index}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class Silence:
    index: int
    match: Matchers
    start: datetime | None = None
    end: datetime | None = None
    daily_from: time | None = None
    daily_to: time | None = None
    days: tuple[str, ...] = ()
    note: str = ""

    def active(self, now: datetime) -> bool:
        """True when `now` (UTC) is inside this window."""
        if self.start is not None and self.end is not None:
            return self.start <= now < self.end
        if self.daily_from is None or self.daily_to is None:
            return False
        clock = now.time().replace(tzinfo=None)
        if self.daily_from <= self.daily_to:
            inside = self.daily_from <= clock < self.daily_to
            day = now
        else:  # crosses midnight: the part after midnight belongs to the day before
            inside = clock >= self.daily_from or clock < self.daily_to
            day = now if clock >= self.daily_from else now - timedelta(days=1)
        return inside and (not self.days or DAYS[day.weekday()] in self.days)

    def label(self) -> str:
        return f"maintenance window {self.index}" + (f" ({self.note})" if self.note else "")


_MATCH_KEYS = ("severity", "min_severity", "dimension", "segment", "step", "direction")
ROUTE_KEYS = (*_MATCH_KEYS, "sinks", "continue", "name")
SILENCE_KEYS = (*_MATCH_KEYS, "start", "end", "from", "to", "days", "note")


def _where(path: object, table: str, index: int) -> str:
    return f"In {path}, [[{table}]] number {index}"


def _words(value: Any, key: str, where: str, choices: Sequence[str] = ()) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{where}: {key} must be a text or a list of texts")
    for item in items:
        if choices and item not in choices:
            raise ConfigError(f"{where}: {key} {item!r} is not one of {', '.join(choices)}")
    return tuple(items)


def _matchers(table: dict[str, Any], where: str) -> Matchers:
    segments = _words(table.get("segment", []), "segment", where)
    for segment in segments:
        if ":" not in segment:
            raise ConfigError(
                f"{where}: segment {segment!r} must be written dimension:value, e.g. brand:acme"
            )
    direction = table.get("direction", "both")
    if direction not in DIRECTIONS:
        raise ConfigError(f"{where}: direction must be one of {', '.join(DIRECTIONS)}")
    low = table.get("min_severity", "")
    if low and low not in SEVERITY_ORDER:
        raise ConfigError(f"{where}: min_severity must be one of {', '.join(SEVERITY_ORDER)}")
    return Matchers(
        severity=_words(table.get("severity", []), "severity", where, SEVERITY_ORDER),
        min_severity=low,
        dimension=_words(table.get("dimension", []), "dimension", where),
        segment=segments,
        step=_words(table.get("step", []), "step", where),
        direction=direction,
    )


def _check_keys(table: Any, allowed: Sequence[str], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where} has an unknown key {key!r}{hint}. Known keys: {', '.join(allowed)}"
            )
    return table


def parse_routes(raw: Any, path: object, sink_names: Sequence[str]) -> tuple[Route, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"In {path}, routes must be written [[routes]]")
    out = []
    for n, item in enumerate(raw, 1):
        where = _where(path, "routes", n)
        table = _check_keys(item, ROUTE_KEYS, where)
        if "sinks" not in table:
            raise ConfigError(f'{where} needs sinks = [...], e.g. sinks = ["slack"]')
        sinks = _words(table["sinks"], "sinks", where, sink_names)
        cont = table.get("continue", False)
        if not isinstance(cont, bool):
            raise ConfigError(f"{where}: continue must be true or false")
        out.append(Route(n, _matchers(table, where), sinks, cont, str(table.get("name", ""))))
    return tuple(out)


def _clock(value: Any, key: str, where: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f'{where}: {key} must be a time of day as "HH:MM" (UTC)') from None


def _instant(value: Any, key: str, where: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(
                f"{where}: {key} must be a date and time, e.g. 2026-12-24T02:00:00Z"
            ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_silences(raw: Any, path: object) -> tuple[Silence, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"In {path}, silences must be written [[silences]]")
    out = []
    for n, item in enumerate(raw, 1):
        where = _where(path, "silences", n)
        table = _check_keys(item, SILENCE_KEYS, where)
        match = _matchers(table, where)
        note = str(table.get("note", ""))
        if "start" in table or "end" in table:
            if "start" not in table or "end" not in table:
                raise ConfigError(f"{where} needs both start and end")
            start = _instant(table["start"], "start", where)
            end = _instant(table["end"], "end", where)
            if end <= start:
                raise ConfigError(f"{where}: end must be after start")
            out.append(Silence(n, match, start=start, end=end, note=note))
        elif "from" in table and "to" in table:
            days = _words(table.get("days", []), "days", where, DAYS)
            out.append(
                Silence(
                    n,
                    match,
                    daily_from=_clock(table["from"], "from", where),
                    daily_to=_clock(table["to"], "to", where),
                    days=days,
                    note=note,
                )
            )
        else:
            raise ConfigError(
                f"{where} needs start and end (one window) or from and to (every day, "
                "optionally only on some days)"
            )
    return tuple(out)
