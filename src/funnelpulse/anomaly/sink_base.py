"""The one interface every alert sink implements, so a new sink is one file plus one registry line.

A delivery is a *notice* about an incident: its opening, its acknowledgement or its resolution.
The delivery code (alerts.py, live_incidents.py) journals notices under their own ids (the
incident id, or the id plus ":acknowledged" / ":resolved") and calls `Sink.deliver`, which hands
the notice to `send`, `acknowledge` or `resolve`. A sink that has no notion of acknowledging or
resolving (a webhook, a chat channel, a file) gets each notice as one more message; a sink that
has (PagerDuty, Alertmanager) updates the alert it opened, found by `key`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, TextIO

from ..config import Settings
from .incidents import Detected
from .sinks import idempotency_key

ACKNOWLEDGED = ":acknowledged"
RESOLVED = ":resolved"
NOTICES = ("open", "acknowledged", "resolved")


def split_notice(notice_id: str) -> tuple[str, str]:
    """(incident id, notice kind) of a notice id: `brand:acme:20191010T03:resolved` -> resolved."""
    for suffix, kind in ((RESOLVED, "resolved"), (ACKNOWLEDGED, "acknowledged")):
        if notice_id.endswith(suffix):
            return notice_id[: -len(suffix)], kind
    return notice_id, "open"


def notice_id(incident_id: str, kind: str) -> str:
    """The journal id of one notice about an incident (the opening keeps the incident's id)."""
    return incident_id + {"open": "", "acknowledged": ACKNOWLEDGED, "resolved": RESOLVED}[kind]


class Sink(ABC):
    """An alert destination.

    Class attributes declare what it needs, so a run can refuse a sink that cannot deliver
    before any work: `settings` (names of `Settings` fields it reads) and `secrets`
    (environment variables it must find; they are scrubbed from every error and log line).
    Methods raise `DeliveryError` (from sinks.py) when delivery fails; `permanent=True` when a
    retry cannot help.
    """

    name: ClassVar[str]
    settings: ClassVar[tuple[str, ...]] = ()
    secrets: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Settings, stream: TextIO) -> None:
        self.config = settings
        self.stream = stream

    def key(self, notice: Detected) -> str:
        """The idempotency key a receiver can deduplicate this notice by."""
        return idempotency_key(notice.incident_id)

    def incident_key(self, notice: Detected) -> str:
        """The key of the incident the notice is about: the same for its open, ack and resolve."""
        return idempotency_key(split_notice(notice.incident_id)[0])

    @abstractmethod
    def send(self, notice: Detected, text: str) -> None:
        """Announce an incident (or, for sinks without a lifecycle, any notice)."""

    def acknowledge(self, notice: Detected, text: str) -> None:
        """Someone took the incident; by default one more message."""
        self.send(notice, text)

    def resolve(self, notice: Detected, text: str) -> None:
        """The incident is over; by default one more message."""
        self.send(notice, text)

    def deliver(self, notice: Detected, text: str) -> None:
        """Hand the notice to send, acknowledge or resolve by its kind."""
        kind = split_notice(notice.incident_id)[1]
        if kind == "resolved":
            self.resolve(notice, text)
        elif kind == "acknowledged":
            self.acknowledge(notice, text)
        else:
            self.send(notice, text)
