"""No-data incidents: a running stream that receives no event for `no_data_minutes` of wall-clock
time raises one incident (not a traffic drop: there is nothing to score), and resolves it when
events arrive again.

The incident is `shop:all:no_data:<start minute>` (start: the wall-clock time of the last arrival,
or of the stream's start), step and type `no_data`, severity `high`. It is routed, muted and silenced
like any other (a `[[silences]]` window with `step = "no_data"` gives quiet hours), and its
opening and resolution go through the same journal and `alerts` table, so a restart finds an
open no-data incident there and resolves it when data returns, never opening a second one for
the same silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ..config import Settings
from .alertlog import AlertLog
from .incident_book import send_one
from .incidents import Detected
from .routes import forced_sinks, route
from .sink_base import notice_id, split_notice
from .workflow import active_mutes, held_back, read_actions

log = logging.getLogger(__name__)

PREFIX = "shop:all:no_data:"
STEP = "no_data"


# The same incident for watched landing folders that receive no file (serve's no_files_hours):
# its own ids, so the stream's incident and the folders' never resolve each other.
FILES_PREFIX = "shop:all:no_files:"


def no_data_incident(start: datetime, end: datetime, prefix: str = PREFIX) -> Detected:
    return Detected(
        incident_id=f"{prefix}{start:%Y%m%dT%H%M}",
        dimension="shop",
        segment="all",
        start=start,
        end=end,
        steps=[STEP],
        types=[STEP],
        severity="high",
        worst_z=0.0,
        lost_purchases=0.0,
        lost_revenue=0.0,
        anomaly_ids=[],
    )


def opening_text(incident: Detected, minutes: float) -> str:
    return (
        f"[HIGH] NO DATA - shop all: no event arrived for {minutes:.0f} min "
        f"(since {incident.start:%Y-%m-%d %H:%M} UTC, wall clock). The source, the tracking or "
        "the stream's connection has stopped; a drop in traffic would still show some events."
    )


def files_opening_text(incident: Detected, minutes: float) -> str:
    return (
        f"[HIGH] NO DATA - shop all: no file landed in the watched folders for "
        f"{minutes / 60:.1f} h (since {incident.start:%Y-%m-%d %H:%M} UTC, wall clock). The export "
        "or its upload to the landing folder has stopped."
    )


def files_resolved_text(incident: Detected) -> str:
    hours = (incident.end - incident.start).total_seconds() / 3600
    return (
        f"[RESOLVED] NO DATA - shop all: files land again at {incident.end:%Y-%m-%d %H:%M} UTC "
        f"after {hours:.1f} h without one (since {incident.start:%H:%M} UTC)."
    )


def resolved_text(incident: Detected) -> str:
    minutes = (incident.end - incident.start).total_seconds() / 60
    return (
        f"[RESOLVED] NO DATA - shop all: events arrive again at {incident.end:%Y-%m-%d %H:%M} UTC "
        f"after {minutes:.0f} min without data (since {incident.start:%H:%M} UTC)."
    )


class NoDataWatch:
    """Called by the stream loop: `arrived()` when a batch brought events, `tick()` every turn.

    With `files=True` (serve's landing folders): the limit is `limit_s`, the ids start with
    FILES_PREFIX and the texts speak of files."""

    def __init__(
        self,
        warehouse: str,
        settings: Settings,
        sinks: Sequence[str] | None,
        check_every_s: float = 5.0,
        *,
        files: bool = False,
        limit_s: float | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.settings = settings
        self.sinks = forced_sinks(sinks, settings.alert_sinks)
        self.limit_s = limit_s if limit_s is not None else settings.no_data_minutes * 60
        self.prefix = FILES_PREFIX if files else PREFIX
        self.opening_text = files_opening_text if files else opening_text
        self.resolved_text = files_resolved_text if files else resolved_text
        self.check_every_s = min(check_every_s, self.limit_s)
        self.last_arrival = time.monotonic()
        self.last_arrival_at = datetime.now(UTC)
        self._last_check = float("-inf")
        self._maybe_open = True  # a run before this one may have left one open
        self._told = False  # every sink has this silence's incident (or holds it back)
        self.opened: list[str] = []  # incident ids opened by this watch (for the result)
        self.resolved: list[str] = []

    def arrived(self) -> None:
        """Events came in: a no-data incident left open (by this run or one before) resolves."""
        self.last_arrival = time.monotonic()
        self.last_arrival_at = datetime.now(UTC)
        self._told = False
        if self._maybe_open and self._run(0.0):
            self._maybe_open = False

    def tick(self) -> None:
        """No events this turn: past the limit, open the incident (checked every few seconds
        until every sink has it)."""
        silent_s = time.monotonic() - self.last_arrival
        if silent_s < self.limit_s or self._told:
            return
        if time.monotonic() - self._last_check < self.check_every_s:
            return
        self._last_check = time.monotonic()
        self._maybe_open = True
        self._told = self._run(silent_s)

    def _run(self, silent_s: float) -> bool:
        try:
            return self._deliver(silent_s)
        except Exception as exc:  # alerting must never stop the stream
            log.error("no-data check failed (%s: %s); the stream goes on", type(exc).__name__, exc)
            return False

    def _deliver(self, silent_s: float) -> bool:
        """Resolve (silent_s below the limit) or open the incident; True when nothing is left
        to deliver."""
        now = datetime.now(UTC)
        with AlertLog(self.warehouse) as journal:
            history = journal.history()
            state: dict[tuple[str, str], str] = {}
            for r in sorted(history, key=lambda r: r["recorded_at"]):
                pair = (r["incident_id"], r["sink"])
                if state.get(pair) != "sent" and r["status"] in ("sent", "muted"):
                    state[pair] = r["status"]
            by_id: dict[str, Detected] = {}
            closed: set[str] = set()
            for r in history:
                base, kind = split_notice(r["incident_id"])
                if not base.startswith(self.prefix) or r["status"] not in ("sent", "muted"):
                    continue
                if kind == "open":
                    by_id[base] = no_data_incident(
                        r["incident_start"], r["incident_end"], self.prefix
                    )
                elif kind == "resolved":
                    closed.add(base)
            open_ids = sorted(set(by_id) - closed)
            if silent_s < self.limit_s:
                return all(  # data is back: resolve what is open
                    self._resolve(journal, history, by_id[i]) for i in open_ids
                )
            if open_ids:  # one incident per silence; a sink held back or failed gets it now
                incident = by_id[open_ids[-1]]
            else:
                incident = no_data_incident(self.last_arrival_at, now, self.prefix)
            mutes = active_mutes(read_actions(self.warehouse), now)
            held = held_back(incident, mutes, self.settings.silences, now)
            routed = route(incident, self.settings.routes, self.settings.alert_sinks, self.sinks)
            text = self.opening_text(incident, silent_s / 60)
            complete = True
            for name in routed.sinks:
                status = state.get((incident.incident_id, name))
                if status == "sent" or (status == "muted" and held):
                    continue
                if held:
                    send_one(
                        journal, self.settings, incident, name, text, status="muted", reason=held
                    )
                    continue
                ok, error = send_one(journal, self.settings, incident, name, text)
                complete &= ok
                log.warning(
                    "no data for %.0f s: incident %s to %s: %s",
                    silent_s,
                    incident.incident_id,
                    name,
                    "sent" if ok else f"failed ({error})",
                )
            if incident.incident_id not in self.opened:
                self.opened.append(incident.incident_id)
            return complete and not held

    def _resolve(
        self, journal: AlertLog, history: list[dict[str, Any]], incident: Detected
    ) -> bool:
        over = replace(incident, end=self.last_arrival_at)
        notice = replace(over, incident_id=notice_id(incident.incident_id, "resolved"))
        told = {
            r["sink"]
            for r in history
            if r["incident_id"] == incident.incident_id and r["status"] == "sent"
        }
        muted = {
            r["sink"]
            for r in history
            if r["incident_id"] == incident.incident_id and r["status"] == "muted"
        }
        done = {
            r["sink"]
            for r in history
            if r["incident_id"] == notice.incident_id and r["status"] in ("sent", "muted")
        }
        ok = True
        for name in told - done:
            ok &= send_one(journal, self.settings, notice, name, self.resolved_text(over))[0]
        for name in muted - told - done:  # never announced: close it in the record only
            send_one(
                journal, self.settings, notice, name, self.resolved_text(over), status="muted"
            )
        if ok:
            self.resolved.append(incident.incident_id)
            log.info("events again: no-data incident %s resolved", incident.incident_id)
        return ok
