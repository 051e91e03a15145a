"""PagerDuty Events API v2: trigger when an incident opens, acknowledge and resolve it later.

Every event of one incident carries the same `dedup_key` (the incident's idempotency key), so
PagerDuty folds a repeat into the alert it already has and the acknowledge/resolve find it.
The routing key is a secret: it is read from FUNNELPULSE_PAGERDUTY_ROUTING_KEY only.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from ..redact import ENV_PAGERDUTY
from .incidents import Detected
from .sink_base import Sink
from .sinks import DeliveryError, incident_record, plain, post_json

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
# FunnelPulse severity -> PagerDuty's four levels
SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}
SUMMARY_CHARS = 1024  # PagerDuty's limit for payload.summary


class PagerDutySink(Sink):
    name = "pagerduty"
    settings: ClassVar[tuple[str, ...]] = ("pagerduty_url",)
    secrets: ClassVar[tuple[str, ...]] = (ENV_PAGERDUTY,)

    def _post(self, event: dict[str, Any], notice: Detected) -> None:
        routing_key = os.environ.get(ENV_PAGERDUTY, "").strip()
        if not routing_key:
            raise DeliveryError(f"{ENV_PAGERDUTY} is not set", permanent=True)
        body = {"routing_key": routing_key, "dedup_key": self.incident_key(notice), **event}
        post_json(
            "pagerduty_url",
            body,
            self.key(notice),
            self.config.alert_timeout_s,
            url=self.config.pagerduty_url,
        )

    def send(self, notice: Detected, text: str) -> None:
        record = incident_record(notice, text)
        record.pop("message")
        self._post(
            {
                "event_action": "trigger",
                "payload": {
                    "summary": plain(text)[:SUMMARY_CHARS],
                    "source": "funnelpulse",
                    "severity": SEVERITY.get(notice.severity, "warning"),
                    "timestamp": notice.start.isoformat(),
                    "component": f"{notice.dimension}:{plain(notice.segment)}",
                    "group": ",".join(notice.steps),
                    "class": ",".join(notice.types),
                    "custom_details": record,
                },
            },
            notice,
        )

    def acknowledge(self, notice: Detected, text: str) -> None:
        self._post({"event_action": "acknowledge"}, notice)

    def resolve(self, notice: Detected, text: str) -> None:
        self._post({"event_action": "resolve"}, notice)
