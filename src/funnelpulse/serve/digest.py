"""The daily digest as `serve` sends it (the `digest_at` setting of `[serve]`).

Once the day's `digest_at` (UTC) has passed, the digest of the day before is due; `serve` sends it
to each digest sink once. The record of what was sent is the alert journal (`digest:<date>` per
sink, see anomaly/digest.py), so a restart, even after a kill -9, does not send it again. A serve
that was down at digest time sends the digest that is due when it comes back: only the latest due
day, never a backlog of the days it missed. A day without data yet, or a receiver that refuses,
is tried again after `alert_retry_s`, until the next day's digest is due.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time

from ..config import Settings
from ..errors import FunnelPulseError

log = logging.getLogger("funnelpulse.serve")

# A test hook like FUNNELPULSE_KILL_AT: the UTC time serve's clock starts at (it then runs at the
# wall clock's pace), so a test reaches a digest time without waiting for it.
CLOCK_ENV = "FUNNELPULSE_FAKE_CLOCK"

Clock = Callable[[], datetime]


def wall_clock() -> Clock:
    """The clock serve schedules by: the UTC wall clock, or the test hook's shifted one."""
    start = os.environ.get(CLOCK_ENV)
    if not start:
        return lambda: datetime.now(UTC)
    origin = datetime.fromisoformat(start)
    origin = origin if origin.tzinfo else origin.replace(tzinfo=UTC)
    began = time.monotonic()
    return lambda: origin + timedelta(seconds=time.monotonic() - began)


def parse_at(text: str) -> day_time | None:
    """`HH:MM` (UTC) as a time of day; empty: no digest. ValueError when it is not a time."""
    if not text.strip():
        return None
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(text)
    return day_time(int(hours), int(minutes))  # ValueError past 23:59


def due_day(now: datetime, at: day_time) -> date:
    """The day whose digest is due at `now`: yesterday once today's `at` has passed, else the
    day before yesterday (the digest of the last `at` that passed)."""
    now = now.astimezone(UTC)
    return now.date() - timedelta(days=1 if now.time() >= at else 2)


class DigestSchedule:
    """Called every poll by serve's `digest` part: sends the due digest once per sink."""

    def __init__(self, warehouse: str, settings: Settings, at: day_time | None,
                 sinks: Sequence[str], retry_s: float, clock: Clock) -> None:
        self.warehouse = warehouse
        self.configure(settings, at, sinks, retry_s)
        self.clock = clock
        self.done: date | None = None  # the due day every sink has (no journal read again)
        self.retry_at: tuple[date, float] | None = None  # (day, monotonic time) of the next try
        self.told = ""

    def configure(self, settings: Settings, at: day_time | None, sinks: Sequence[str],
                  retry_s: float) -> None:
        self.settings = settings
        self.at = at
        self.sinks = list(sinks)
        self.retry_s = retry_s
        self.done = None

    def sent(self, day: date) -> set[str]:
        """The sinks the journal says got the digest of `day`."""
        from ..anomaly.alertlog import AlertLog

        key = f"digest:{day.isoformat()}"
        with AlertLog(self.warehouse) as journal:
            return {r["sink"] for r in journal.history()
                    if r["incident_id"] == key and r["status"] == "sent"}

    def step(self) -> None:
        if self.at is None:
            return
        day = due_day(self.clock(), self.at)
        if day == self.done:
            return
        if self.retry_at and self.retry_at[0] == day and time.monotonic() < self.retry_at[1]:
            return
        from ..anomaly.digest import build_digest, send_digest

        try:
            missing = [s for s in self.sinks if s not in self.sent(day)]
            if not missing:
                log.info("digest of %s: already sent to %s", day, ", ".join(self.sinks))
                self.done = day
                return
            outcome = send_digest(self.warehouse, self.settings,
                                  build_digest(self.warehouse, self.settings, day), missing)
        except FunnelPulseError as exc:  # no data for the day yet, the journal busy, ...
            self._later(day, f"the digest of {day} is not sent yet: {exc}")
            return
        for name, status in outcome.items():
            log.info("digest of %s to %s: %s", day, name, status)
        failed = [n for n, s in outcome.items() if s.startswith("failed")]
        if failed:
            self._later(day, f"the digest of {day} did not reach {', '.join(failed)}")
        else:
            self.done, self.retry_at, self.told = day, None, ""

    def _later(self, day: date, why: str) -> None:
        self.retry_at = (day, time.monotonic() + self.retry_s)
        if why != self.told:  # once per reason, not once per try
            log.warning("%s; trying again every %g s", why, self.retry_s)
            self.told = why
