"""Alert delivery: one alert per incident per sink, journalled before and after it is sent.

Guarantee (see README "Guarantees"): every incident reaches every sink at least once, and a
repeat (always with the same idempotency key) can only follow either a crash (kill -9, power loss)
in the window between the receiver accepting a delivery and the "sent" record reaching the journal
(one fsync), or a delivery that got no answer (a timeout: it may have arrived), which the next run
sends again. Within a run, a delivery is retried only when the receiver certainly did not take it. SIGTERM is not a crash: the delivery under way finishes and is recorded first.
Two runs at once are serialized by the warehouse's alert lock, so they never both send.
Secrets come only from the environment and are scrubbed from every recorded error and log line.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from ..config import SINKS, Settings
from ..console import Progress, SilentProgress
from ..contract import ALERT_SCHEMA
from ..errors import ConfigError, FunnelPulseError
from ..faults import checkpoint
from . import incident_store, notices
from .alertlog import AlertLog, previous_alerts
from .incidents import Detected, group_incidents
from .scoring import SEVERITY_RANK
from .sink_registry import sink
from .sinks import (
    DeliveryError,
    Send,
    idempotency_key,
    incident_record,
    message,
    plain,
    scrub,
)
from .workflow import read_actions

__all__ = [
    "ALERT_SCHEMA",
    "SINKS",
    "AlertResult",
    "AlertsInterrupted",
    "idempotency_key",
    "incident_record",
    "message",
    "previous_alerts",
    "send_alerts",
]

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.5, 2.0)
# A sink that fails this many deliveries in a row is not tried again in this run.
GIVE_UP_AFTER = 3
# No new delivery starts after this long; what is left is sent by the next run.
BUDGET_S = 60.0


class AlertsInterrupted(FunnelPulseError):
    """SIGTERM arrived while alerting: the delivery under way was finished and recorded."""


@dataclass
class AlertResult:
    sent: int = 0
    failed: int = 0
    skipped: int = 0  # sent (or cooled down) by an earlier run
    cooldown: int = 0
    resent: int = 0  # interrupted by a crash earlier, sent again with the same key
    pending: int = 0  # not attempted: the sink gave up or the time budget ran out
    muted: int = 0  # held back by a mute or a maintenance window (recorded as muted)
    updates: int = 0  # of `sent`: acknowledge and resolve notices
    errors: dict[str, str] = field(default_factory=dict)  # sink -> last error (scrubbed)
    # sink -> {"sent": n, "failed": n, "pending": n}: the same counts, per sink
    by_sink: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, sink_name: str, what: str) -> None:
        """Count one `sent`, `failed` or `pending` delivery of `sink_name` (the totals too)."""
        setattr(self, what, getattr(self, what) + 1)
        per = self.by_sink.setdefault(sink_name, {"sent": 0, "failed": 0, "pending": 0})
        per[what] += 1

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    def summary(self) -> str:
        text = (
            f"Alerts: {self.sent} sent, {self.failed} failed, {self.skipped} already sent, "
            f"{self.cooldown} in cool-down"
        )
        if self.resent:
            text += f", {self.resent} resent after an interrupted delivery (same idempotency key)"
        if self.pending:
            text += f", {self.pending} not attempted"
        if self.muted:
            text += f", {self.muted} muted"
        return text

    def problem(self) -> str:
        """One line for the user when not everything was delivered."""
        causes = "; ".join(f"{name}: {error}" for name, error in sorted(self.errors.items()))
        undelivered = self.failed + self.pending
        return (
            f"{undelivered} alert deliver{'y' if undelivered == 1 else 'ies'} did not succeed "
            f"({causes or 'time budget spent'}). They are retried by the next "
            "`funnelpulse detect --alert`"
        )


@contextmanager
def _sigterm_deferred() -> Iterator[list[int]]:
    """While alerting, SIGTERM only asks to stop after the delivery under way is recorded."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)
        if got and callable(previous):
            previous(signal.SIGTERM, None)


def deliver_once(
    send: Send,
    incident: Detected,
    text: str,
    delays_s: Sequence[float],
    deadline: float,
    stop: list[int] | None = None,
) -> tuple[bool, int, str | None]:
    """One delivery of one incident to one sink: retried after `delays_s` only while the receiver
    certainly did not take it (refused connection, 408, 429, 5xx) and the deadline allows.

    A timeout or a connection dropped while waiting for the answer is not retried: the alert may
    have arrived, and the next run sends it again with the same idempotency key. A sink raising
    anything but DeliveryError is not retried either (its state is unknown).
    """
    stop = stop if stop is not None else []
    error = None
    attempt = 0
    for attempt in range(1, len(delays_s) + 2):
        try:
            send(incident, text)
            return True, attempt, None
        except DeliveryError as exc:
            error = scrub(str(exc))
            if exc.permanent or exc.maybe_delivered:
                break
        except Exception as exc:  # a sink must never crash the pipeline
            error = scrub(f"{type(exc).__name__}: {exc}")
            break
        if attempt > len(delays_s):
            break
        wait_until = time.monotonic() + delays_s[attempt - 1]
        if wait_until > deadline:
            break
        while time.monotonic() < wait_until and not stop:
            time.sleep(0.05)
        if stop:
            break
    return False, attempt, error


def send_alerts(
    warehouse: str,
    settings: Settings,
    anomalies: list[dict[str, Any]],
    *,
    sinks: Sequence[str] | None = None,
    stream: TextIO | None = None,
    retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
    budget_s: float = BUDGET_S,
    progress: Progress | None = None,
    as_of: datetime | None = None,
    now: datetime | None = None,
    incidents: Sequence[Detected] | None = None,
    source: str = "batch",
) -> AlertResult:
    """Group anomalies into incidents (one per real event) and alert each sink once per incident
    (see module doc). `incidents` already grouped and recorded (by `detect`) are used as given;
    otherwise the grouping is recorded in the lasting incidents table, whose ids are the keys.

    `sinks` (--sink) bypasses the configured routes. With `as_of` (the end of the newest scored
    hour), an incident whose evidence has been normal for `resolve_after_h` hours gets its
    resolve notice. `now` is the clock mutes and maintenance windows are judged by.
    """
    progress = progress or SilentProgress()
    floor = SEVERITY_RANK.get(settings.min_severity)
    if floor is None:
        raise ConfigError(f"min_severity must be one of {', '.join(SEVERITY_RANK)}")
    by_id = {a["anomaly_id"]: a for a in anomalies}
    if incidents is None:
        incidents = incident_store.record(warehouse, group_incidents(anomalies), source=source)
    incidents = [i for i in incidents if SEVERITY_RANK[i.severity] >= floor]
    result = AlertResult()
    with AlertLog(warehouse, on_wait=progress.step) as journal, _sigterm_deferred() as stop:
        todo = notices.plan(
            incidents, settings, sinks, read_actions(warehouse), as_of, now or datetime.now(UTC)
        )
        names = list(dict.fromkeys(p.sink for p in todo))
        senders = {name: sink(name, settings, stream or sys.stderr) for name in names}
        history = journal.history()
        done = {
            (r["incident_id"], r["sink"]) for r in history if r["status"] in ("sent", "cooldown")
        }
        opened = {(r["incident_id"], r["sink"]) for r in history if r["status"] == "sent"}
        muted = {(r["incident_id"], r["sink"]) for r in history if r["status"] == "muted"}
        interrupted = {(r["incident_id"], r["sink"]) for r in history if r["status"] == "sending"}
        last_sent: dict[tuple[str, str, str], datetime] = {}
        for r in history:
            if r["status"] == "sent":
                key = (r["sink"], r["dimension"], r["segment"])
                last_sent[key] = max(last_sent.get(key, r["incident_start"]), r["incident_start"])
        deadline = time.monotonic() + budget_s
        failures_in_row = dict.fromkeys(names, 0)
        cooldown = timedelta(hours=settings.cooldown_h)
        for number, item in enumerate(todo, 1):
            incident, name = item.notice, item.sink
            pair = (incident.incident_id, name)
            if pair in done:
                result.skipped += 1
                continue
            first = (item.incident.incident_id, name)
            if item.kind != "open" and first not in opened:
                continue  # never acknowledge or resolve what was not announced to this sink
            if item.kind == "open" and item.resolved and first in muted:
                continue  # held back until it was over: nothing left to say
            if stop or failures_in_row[name] >= GIVE_UP_AFTER or time.monotonic() > deadline:
                result.count(name, "pending")
                continue
            text = notices.text(item, message(item.incident, by_id), settings)

            def record(status: str, attempts: int = 0, error: str | None = None) -> None:
                journal.record(
                    {
                        "incident_id": incident.incident_id,  # noqa: B023 (used at once)
                        "sink": name,  # noqa: B023
                        "status": status,
                        "attempts": attempts,
                        "error": error,
                        "severity": incident.severity,  # noqa: B023
                        "dimension": incident.dimension,  # noqa: B023
                        "segment": incident.segment,  # noqa: B023
                        "incident_start": incident.start,  # noqa: B023
                        "incident_end": incident.end,  # noqa: B023
                        "message": text,  # noqa: B023
                        "recorded_at": datetime.now(UTC),
                    }
                )

            if item.held:
                if pair not in muted:  # one record per held notice, not one per run
                    record("muted", error=item.held)
                    muted.add(pair)
                result.muted += 1
                continue
            key = (name, incident.dimension, incident.segment)
            recent = last_sent.get(key)
            if (
                item.kind == "open"
                and recent is not None
                and timedelta(0) < incident.start - recent < cooldown
            ):
                record("cooldown")
                result.cooldown += 1
                continue
            again = pair in interrupted
            progress.step(
                f"Alert {number}/{len(todo)} to {name}: {incident.dimension} incident at "
                + ("" if item.kind == "open" else f"({item.kind}) ")
                + f"{incident.start:%Y-%m-%d %H:%M} UTC"
                + (" (resending, same key)" if again else "")
            )
            record("sending")
            checkpoint("alerts.before_send")
            ok, attempts, error = deliver_once(
                senders[name], incident, text, retry_delays_s, deadline, stop
            )
            checkpoint("alerts.after_send")
            if item.kind == "resolved":
                checkpoint("alerts.resolve_after_send")
            record("sent" if ok else "failed", attempts, error)
            checkpoint("alerts.recorded")
            if ok:
                result.count(name, "sent")
                result.resent += again
                if item.kind == "open":
                    last_sent[key] = incident.start
                    opened.add(pair)
                else:
                    result.updates += 1
                failures_in_row[name] = 0
                log.info("alert %s sent to %s (%d attempts)", plain(pair[0]), name, attempts)
            else:
                result.count(name, "failed")
                failures_in_row[name] += 1
                result.errors[name] = error or "failed"
                log.info("alert %s to %s failed: %s", plain(pair[0]), name, error)
        if result.pending and any(n >= GIVE_UP_AFTER for n in failures_in_row.values()):
            for name, count in failures_in_row.items():
                if count >= GIVE_UP_AFTER:
                    result.errors[name] = (
                        f"{result.errors.get(name)}; gave up after {count} failed deliveries in a row"
                    )
        if stop:
            progress.step("Recording the alerts sent before SIGTERM")
    if stop and not callable(signal.getsignal(signal.SIGTERM)):
        raise AlertsInterrupted(
            f"Stopped by SIGTERM after {result.sent} alerts were sent and recorded; "
            f"{result.pending} were not sent. Run `funnelpulse detect --alert` again to send them"
        )
    return result
