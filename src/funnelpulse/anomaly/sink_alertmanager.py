"""An Alertmanager-compatible sink: POST /api/v2/alerts with labels, annotations and times.

Alertmanager identifies an alert by its labels, so every notice of one incident carries the
same labels (with `incident_key`, the incident's idempotency key). An opening is sent as firing
until `FIRING_HOURS` from now (FunnelPulse does not re-send a firing alert the way Prometheus
does); its resolution is the same alert with `endsAt` set to when it ended. An acknowledgement
has no meaning in Alertmanager (a silence is the closest) and is not sent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

from .incidents import Detected
from .sink_base import Sink, split_notice
from .sinks import plain, post_json

FIRING_HOURS = 24
ALERTNAME = "FunnelPulseIncident"


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AlertmanagerSink(Sink):
    name = "alertmanager"
    settings: ClassVar[tuple[str, ...]] = ("alertmanager_url", "dashboard_url")

    def _alert(self, notice: Detected, text: str, ends: datetime) -> dict[str, Any]:
        incident = split_notice(notice.incident_id)[0]
        return {
            "labels": {
                "alertname": ALERTNAME,
                "severity": notice.severity,
                "dimension": notice.dimension,
                "segment": f"{notice.dimension}:{plain(notice.segment)}",
                "step": ",".join(notice.steps),
                "direction": "drops" if "drop" in ",".join(notice.types) else "spikes",
                "incident_key": self.incident_key(notice),
            },
            "annotations": {"summary": plain(text), "incident_id": plain(incident)},
            "startsAt": _time(notice.start),
            "endsAt": _time(ends),
            "generatorURL": self.config.dashboard_url.rstrip("/")
            + "/Anomalies?incident="
            + quote(incident, safe=""),
        }

    def _post(self, alert: dict[str, Any], notice: Detected) -> None:
        url = self.config.alertmanager_url.rstrip("/") + "/api/v2/alerts"
        post_json(
            "alertmanager_url", [alert], self.key(notice), self.config.alert_timeout_s, url=url
        )

    def send(self, notice: Detected, text: str) -> None:
        ends = datetime.now(UTC) + timedelta(hours=FIRING_HOURS)
        self._post(self._alert(notice, text, ends), notice)

    def acknowledge(self, notice: Detected, text: str) -> None:
        return None

    def resolve(self, notice: Detected, text: str) -> None:
        now = datetime.now(UTC)
        ends = min(notice.end, now) if notice.end > notice.start else now
        self._post(self._alert(notice, text, ends), notice)
