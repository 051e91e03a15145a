"""Alert delivery: one alert per incident per sink, retried with back-off, recorded in `alerts`.

Secrets (webhook URLs, SMTP credentials) come only from the environment and are scrubbed from
every recorded error. The `alerts` table is checked before sending, so a restart never resends.
"""

from __future__ import annotations

import json
import os
import smtplib
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, TextIO

import pyarrow as pa

from .. import tables
from ..config import Settings
from ..errors import ConfigError
from .incidents import Detected, group_incidents
from .scoring import SEVERITY_RANK

SINKS = ("console", "file", "webhook", "slack", "email")
ENV_WEBHOOK = "FUNNELPULSE_WEBHOOK_URL"
ENV_SLACK = "FUNNELPULSE_SLACK_WEBHOOK_URL"
ENV_SMTP_USER = "FUNNELPULSE_SMTP_USER"
ENV_SMTP_PASSWORD = "FUNNELPULSE_SMTP_PASSWORD"

ALERT_SCHEMA = pa.schema(
    [
        ("incident_id", pa.string()),
        ("sink", pa.string()),
        ("status", pa.string()),  # sent | failed | cooldown
        ("attempts", pa.int64()),
        ("error", pa.string()),
        ("severity", pa.string()),
        ("dimension", pa.string()),
        ("segment", pa.string()),
        ("incident_start", pa.timestamp("us", "UTC")),
        ("incident_end", pa.timestamp("us", "UTC")),
        ("message", pa.string()),
        ("recorded_at", pa.timestamp("us", "UTC")),
    ]
)


class DeliveryError(Exception):
    """A sink could not deliver; the message must already be free of secrets."""


@dataclass
class AlertResult:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    cooldown: int = 0


def message(incident: Detected, anomalies: dict[str, dict[str, Any]]) -> str:
    worst = max((anomalies[a] for a in incident.anomaly_ids), key=lambda r: abs(r["z"]))
    what = worst["step"].replace("_", " ")
    if worst["step"] == "traffic":
        measure = f"views {worst['observed_rate']:,.0f} vs expected {worst['expected_rate']:,.0f}"
    else:
        measure = f"observed {worst['observed_rate'] * 100:.1f}% vs expected {worst['expected_rate'] * 100:.1f}%"
    text = (
        f"[{incident.severity.upper()}] {what} {worst['type']} - {incident.dimension} {incident.segment}, "
        f"{incident.start:%Y-%m-%d %H:%M}-{incident.end:%H:%M} UTC: {measure} (z {worst['z']:+.1f}). "
        f"Estimated lost purchases {incident.lost_purchases:,.1f}, revenue {incident.lost_revenue:,.2f}."
    )
    cause = worst.get("root_cause")
    if cause:
        text += " Root cause: " + json.loads(cause).get("summary", "")
    return text


def _scrub(text: str) -> str:
    for name in (ENV_WEBHOOK, ENV_SLACK, ENV_SMTP_PASSWORD, ENV_SMTP_USER):
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, f"${name}")
    return text


def _post_json(url_env: str, payload: dict[str, Any], timeout_s: float = 10.0) -> None:
    url = os.environ.get(url_env)
    if not url:
        raise DeliveryError(f"{url_env} is not set")
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status >= 300:
                raise DeliveryError(f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(
            _scrub(f"cannot reach {url_env}: {getattr(exc, 'reason', exc)}")
        ) from None


def incident_record(incident: Detected, text: str) -> dict[str, Any]:
    """What the file and webhook sinks send: the incident's facts plus the readable message."""
    return {
        "incident_id": incident.incident_id,
        "severity": incident.severity,
        "dimension": incident.dimension,
        "segment": incident.segment,
        "start": incident.start.isoformat(),
        "end": incident.end.isoformat(),
        "steps": incident.steps,
        "types": incident.types,
        "z": incident.worst_z,
        "lost_purchases": incident.lost_purchases,
        "lost_revenue": incident.lost_revenue,
        "message": text,
    }


def _sink(name: str, settings: Settings, stream: TextIO) -> Callable[[Detected, str], None]:
    if name == "console":
        return lambda incident, text: print(f"ALERT {text}", file=stream)
    if name == "file":
        if not settings.alert_file:
            raise ConfigError("The file alert sink needs alert_file (FUNNELPULSE_ALERT_FILE)")

        def to_file(incident: Detected, text: str) -> None:
            with open(settings.alert_file, "a") as handle:
                handle.write(json.dumps(incident_record(incident, text)) + "\n")

        return to_file
    if name == "webhook":
        return lambda incident, text: _post_json(ENV_WEBHOOK, incident_record(incident, text))
    if name == "slack":
        return lambda incident, text: _post_json(ENV_SLACK, {"text": f":rotating_light: {text}"})
    if name == "email":

        def by_email(incident: Detected, text: str) -> None:
            if not settings.smtp_to:
                raise DeliveryError("smtp_to is not set")
            mail = EmailMessage()
            mail["Subject"] = (
                f"FunnelPulse {incident.severity}: {incident.dimension} {incident.segment}"
            )
            mail["From"] = settings.smtp_from
            mail["To"] = settings.smtp_to
            mail.set_content(text)
            try:
                with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
                    user, password = (
                        os.environ.get(ENV_SMTP_USER),
                        os.environ.get(ENV_SMTP_PASSWORD),
                    )
                    if user and password:
                        smtp.starttls()
                        smtp.login(user, password)
                    smtp.send_message(mail)
            except (OSError, smtplib.SMTPException) as exc:
                raise DeliveryError(
                    _scrub(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {exc}")
                ) from None

        return by_email
    raise ConfigError(f"Unknown alert sink {name!r}. Use: {', '.join(SINKS)}")


def _deliver(
    send: Callable[[Detected, str], None], incident: Detected, text: str, delays_s: Sequence[float]
) -> tuple[bool, int, str | None]:
    error = None
    for attempt in range(1, len(delays_s) + 2):
        try:
            send(incident, text)
            return True, attempt, None
        except DeliveryError as exc:
            error = _scrub(str(exc))
        except Exception as exc:  # a sink must never crash the pipeline
            error = _scrub(f"{type(exc).__name__}: {exc}")
        if attempt <= len(delays_s):
            time.sleep(delays_s[attempt - 1])
    return False, len(delays_s) + 1, error


def previous_alerts(warehouse: str) -> list[dict[str, Any]]:
    path = tables.table_path(warehouse, tables.ALERTS)
    return tables.read(path).to_pylist() if tables.exists(path) else []


def send_alerts(
    warehouse: str,
    settings: Settings,
    anomalies: list[dict[str, Any]],
    *,
    sinks: Sequence[str] | None = None,
    stream: TextIO | None = None,
    retry_delays_s: Sequence[float] = (1.0, 2.0, 4.0),
) -> AlertResult:
    """Group anomalies into incidents and alert each sink once per incident."""
    names = list(sinks or settings.alert_sinks)
    senders = {name: _sink(name, settings, stream or sys.stderr) for name in names}
    floor = SEVERITY_RANK.get(settings.min_severity)
    if floor is None:
        raise ConfigError(f"min_severity must be one of {', '.join(SEVERITY_RANK)}")
    by_id = {a["anomaly_id"]: a for a in anomalies}
    history = previous_alerts(warehouse)
    done = {(r["incident_id"], r["sink"]) for r in history if r["status"] in ("sent", "cooldown")}
    last_sent: dict[tuple[str, str, str], datetime] = {}
    for r in history:
        if r["status"] == "sent":
            key = (r["sink"], r["dimension"], r["segment"])
            last_sent[key] = max(last_sent.get(key, r["incident_start"]), r["incident_start"])
    result = AlertResult()
    records = []
    now = datetime.now(UTC)
    cooldown = timedelta(hours=settings.cooldown_h)
    for incident in group_incidents(anomalies):
        if SEVERITY_RANK[incident.severity] < floor:
            continue
        text = message(incident, by_id)
        for name, send in senders.items():
            if (incident.incident_id, name) in done:
                result.skipped += 1
                continue
            key = (name, incident.dimension, incident.segment)
            recent = last_sent.get(key)
            if recent is not None and timedelta(0) < incident.start - recent < cooldown:
                status, attempts, error = "cooldown", 0, None
                result.cooldown += 1
            else:
                ok, attempts, error = _deliver(send, incident, text, retry_delays_s)
                status = "sent" if ok else "failed"
                if ok:
                    result.sent += 1
                    last_sent[key] = incident.start
                else:
                    result.failed += 1
            records.append(
                {
                    "incident_id": incident.incident_id,
                    "sink": name,
                    "status": status,
                    "attempts": attempts,
                    "error": error,
                    "severity": incident.severity,
                    "dimension": incident.dimension,
                    "segment": incident.segment,
                    "incident_start": incident.start,
                    "incident_end": incident.end,
                    "message": text,
                    "recorded_at": now,
                }
            )
    if records:
        tables.write(
            tables.table_path(warehouse, tables.ALERTS),
            pa.Table.from_pylist(records, schema=ALERT_SCHEMA),
            replace=(),
        )
    return result
