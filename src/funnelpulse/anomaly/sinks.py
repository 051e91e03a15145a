"""Alert sinks and what they send: the message text, secret scrubbing, markup escaping.

Every payload carries a stable idempotency key derived from the incident id, so a receiver can
drop the repeat that a crash between "delivered" and "recorded" may cause (see alerts.py).
Data values (brand, category, price band names) are never interpreted as markup: Slack gets
`& < >` escaped with formatting off, the HTML e-mail part is HTML-escaped, and control
characters are removed everywhere (headers, terminals).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import smtplib
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, TextIO
from urllib.parse import quote, unquote, urlsplit

from ..config import Settings
from ..errors import ConfigError
from .incidents import Detected

SINKS = ("console", "file", "webhook", "slack", "email")
ENV_WEBHOOK = "FUNNELPULSE_WEBHOOK_URL"
ENV_SLACK = "FUNNELPULSE_SLACK_WEBHOOK_URL"
ENV_SMTP_USER = "FUNNELPULSE_SMTP_USER"
ENV_SMTP_PASSWORD = "FUNNELPULSE_SMTP_PASSWORD"
SECRET_ENVS = (ENV_WEBHOOK, ENV_SLACK, ENV_SMTP_PASSWORD, ENV_SMTP_USER)
REQUEST_TIMEOUT_S = 5.0
KEY_HEADER = "Idempotency-Key"
INCIDENT_HEADER = "X-FunnelPulse-Incident"
# Pieces of a secret shorter than this are not scrubbed on their own (they carry no secret).
MIN_PIECE = 4
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

Send = Callable[[Detected, str], None]


class DeliveryError(Exception):
    """A sink could not deliver; `permanent` means a retry cannot help (bad URL, HTTP 4xx)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def idempotency_key(incident_id: str) -> str:
    """Stable per incident, safe in any header (the incident id holds free-form segment names)."""
    return "fp-" + hashlib.blake2b(incident_id.encode(), digest_size=16).hexdigest()


def plain(value: object) -> str:
    """A data value as one line of plain text: control characters (newlines, ANSI escapes) removed."""
    return _CONTROL.sub(" ", str(value))


def slack_escape(text: str) -> str:
    """Slack's own escaping: `&`, `<`, `>` (so no links, mentions or `<url|label>` from data)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- secrets ------------------------------------------------------------------------------


def _secret_pieces(name: str, value: str) -> set[str]:
    """The value and every part of it that could leak alone: URL path, query, credentials, tokens."""
    value = value.strip()
    pieces = {value, unquote(value), quote(value, safe=""), quote(value, safe="/:?&=")}
    if name == ENV_SMTP_USER:  # a login name: the whole value only, not its words
        return {p for p in pieces if p}
    secret_parts = [value]
    try:
        parts = urlsplit(value)
        if parts.scheme and parts.netloc:
            host = parts.netloc.rsplit("@", 1)[-1]
            # the host is no secret; the credentials and everything after the host are
            secret_parts = [
                value.split(host, 1)[-1],
                parts.path,
                parts.query,
                parts.fragment,
                parts.username or "",
                parts.password or "",
            ]
    except ValueError:
        pass
    pieces.update(secret_parts)
    for piece in secret_parts:
        for coarse in re.split(r"[/?&=#;,@\s'\"]+", piece):
            pieces.add(coarse)
            pieces.update(unquote(coarse).split())
            pieces.update(re.split(r"[^A-Za-z0-9]+", coarse))
    return {p for p in pieces if len(p) >= MIN_PIECE}


def _secret_envs() -> list[str]:
    """The alert secrets, and every FUNNELPULSE_KAFKA_* variable (SASL/SSL credentials)."""
    return [*SECRET_ENVS, *(n for n in os.environ if n.startswith("FUNNELPULSE_KAFKA_"))]


def scrub(text: str) -> str:
    """Remove any part of any configured secret from `text`, whatever produced it."""
    pieces: set[str] = set()
    for name in _secret_envs():
        secret = os.environ.get(name)
        if secret and secret.strip():
            pieces |= _secret_pieces(name, secret)
    if not pieces:
        return text
    pattern = "|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True))
    return re.sub(pattern, "***", text, flags=re.IGNORECASE)


# ---- the message --------------------------------------------------------------------------

_COUNTS = {
    "conversion": ("views", "bought"),
    "view_to_cart": ("views", "carted"),
    "cart_to_purchase": ("carts", "bought"),
    "session_conversion": ("sessions", "bought"),
    "session_view_to_cart": ("sessions", "carted"),
    "session_cart_to_purchase": ("carting sessions", "bought"),
}


def _count(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 10 else f"{x:,.1f}".replace(".0", "")


def span(start: datetime, end: datetime) -> str:
    """`2019-10-10 03:00-05:00`, or with both dates when the span crosses midnight."""
    if (end - timedelta(microseconds=1)).date() == start.date():
        return f"{start:%Y-%m-%d %H:%M}-{end:%H:%M}"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"


def window_hours(row: dict[str, Any]) -> int:
    """The length of the window that fired: the row's `window_hours`, else its span, else 1."""
    hours = row.get("window_hours")
    if hours:
        return int(hours)
    span = row["window_end"] - row["window_start"]
    return max(1, round(span / timedelta(hours=1)))


def evidence(row: dict[str, Any]) -> str:
    """Observed against expected with the counts behind them, e.g. 3 of 35 carts bought, 16 expected."""
    obs, exp = row["observed_rate"], row["expected_rate"]
    if row["step"] == "traffic":
        return f"{_count(obs)} views, {_count(exp)} expected"
    den, num = row.get("denominator"), row.get("numerator")
    unit, verb = _COUNTS.get(row["step"], ("events", "converted"))
    rates = f"{obs * 100:.1f}% vs {exp * 100:.1f}% expected"
    if den is None or num is None:
        return rates
    return f"{num:,} of {den:,} {unit} {verb}, {_count(den * exp)} expected ({rates})"


def message(incident: Detected, anomalies: dict[str, dict[str, Any]]) -> str:
    """One plain-text paragraph: what, where, the window that fired, evidence, loss, root cause."""
    worst = anomalies.get(incident.root_anomaly_id) or max(
        (anomalies[a] for a in incident.anomaly_ids), key=lambda r: abs(r["z"])
    )
    hours = window_hours(worst)
    what = worst["step"].replace("_", " ") + " " + worst["type"]
    if worst["type"].startswith(worst["step"]):  # traffic_drop, not "traffic traffic_drop"
        what = worst["type"].replace("_", " ")
    lost, revenue = incident.lost_purchases, incident.lost_revenue
    word = "lost" if lost >= 0 else "extra"
    text = (
        f"[{incident.severity.upper()}] {what} - {incident.dimension} "
        f"{plain(incident.segment)}, {span(incident.start, incident.end)} UTC. "
        f"Window that fired: {hours} h ({span(worst['window_start'], worst['window_end'])}): "
        f"{evidence(worst)}, z {worst['z']:+.1f}. "
        f"Estimated {word} purchases {abs(lost):,.1f}, revenue {abs(revenue):,.2f} (all steps)."
    )
    cause = worst.get("root_cause")
    if cause:
        summary = json.loads(cause).get("summary")
        if summary:
            text += " Root cause: " + plain(summary)
    others = [s for s in incident.segments if s != incident.root]
    if others:
        shown = ", ".join(plain(s) for s in others[:8])
        more = f" and {len(others) - 8} more" if len(others) > 8 else ""
        text += f" Also moved ({len(others)} segments): {shown}{more}."
    return text


def incident_record(incident: Detected, text: str) -> dict[str, Any]:
    """What the file and webhook sinks send: the incident's facts plus the readable message."""
    return {
        "idempotency_key": idempotency_key(incident.incident_id),
        "incident_id": incident.incident_id,
        "severity": incident.severity,
        "dimension": incident.dimension,
        "segment": incident.segment,
        "root": incident.root,
        "segments": incident.segments or [incident.root],
        "drivers": incident.drivers,
        "start": incident.start.isoformat(),
        "end": incident.end.isoformat(),
        "step": incident.step or (incident.steps[0] if incident.steps else ""),
        "kind": incident.kind,
        "steps": incident.steps,
        "types": incident.types,
        "z": incident.worst_z,
        "lost_purchases": incident.lost_purchases,
        "lost_revenue": incident.lost_revenue,
        "message": text,
    }


# ---- the sinks ----------------------------------------------------------------------------


def _checked_url(url_env: str) -> str:
    url = os.environ.get(url_env, "")
    if not url:
        raise DeliveryError(f"{url_env} is not set", permanent=True)
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or re.search(r"[\s\x00-\x1f\x7f]", url)
    ):
        raise DeliveryError(
            f"{url_env} is not a valid http(s) URL (no spaces, starts with https://)",
            permanent=True,
        )
    return url


def post_json(url_env: str, payload: dict[str, Any], key: str) -> None:
    """POST `payload` with the idempotency key as a header; HTTP 4xx (but 408/429) is permanent."""
    url = _checked_url(url_env)
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={
            "Content-Type": "application/json",
            "User-Agent": "funnelpulse",
            KEY_HEADER: key,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            if response.status >= 300:
                raise DeliveryError(f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        permanent = 400 <= exc.code < 500 and exc.code not in (408, 429)
        raise DeliveryError(f"{url_env}: HTTP {exc.code}", permanent=permanent) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(scrub(f"cannot reach {url_env}: {reason}")) from None


def _email(settings: Settings) -> Send:
    def by_email(incident: Detected, text: str) -> None:
        key = idempotency_key(incident.incident_id)
        mail = EmailMessage()
        mail["Subject"] = plain(
            f"FunnelPulse {incident.severity}: {incident.dimension} {incident.segment}"
        )[:200]
        mail["From"] = settings.smtp_from
        mail["To"] = settings.smtp_to
        mail["Message-ID"] = make_msgid(idstring=key, domain="funnelpulse")
        mail[INCIDENT_HEADER] = key
        mail.set_content(text)
        mail.add_alternative(
            "<html><body><p>" + html.escape(text) + "</p></body></html>", subtype="html"
        )
        try:
            with smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=REQUEST_TIMEOUT_S
            ) as smtp:
                user, password = os.environ.get(ENV_SMTP_USER), os.environ.get(ENV_SMTP_PASSWORD)
                if user and password:
                    smtp.starttls()
                    smtp.login(user, password)
                smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(
                scrub(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {exc}")
            ) from None

    return by_email


def sink(name: str, settings: Settings, stream: TextIO) -> Send:
    """The sender of one sink; it raises DeliveryError (already free of secrets) when it fails."""
    if name == "console":
        return lambda incident, text: print(f"ALERT {text}", file=stream, flush=True)
    if name == "file":
        if not settings.alert_file:
            raise ConfigError("The file alert sink needs alert_file (FUNNELPULSE_ALERT_FILE)")

        def to_file(incident: Detected, text: str) -> None:
            with open(settings.alert_file, "a") as handle:
                handle.write(json.dumps(incident_record(incident, text)) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

        return to_file
    if name == "webhook":
        return lambda incident, text: post_json(
            ENV_WEBHOOK, incident_record(incident, text), idempotency_key(incident.incident_id)
        )
    if name == "slack":

        def to_slack(incident: Detected, text: str) -> None:
            key = idempotency_key(incident.incident_id)
            payload = {
                "text": f":rotating_light: {slack_escape(text)}",
                "mrkdwn": False,
                "unfurl_links": False,
                "unfurl_media": False,
                "idempotency_key": key,
            }
            post_json(ENV_SLACK, payload, key)

        return to_slack
    if name == "email":
        if not settings.smtp_to:
            raise ConfigError("The email alert sink needs smtp_to (FUNNELPULSE_SMTP_TO)")
        return _email(settings)
    raise ConfigError(f"Unknown alert sink {name!r}. Use: {', '.join(SINKS)}")


class ScrubSecrets(logging.Filter):
    """Log records leave with every part of every secret replaced (operators' logs included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def scrubbed_logging(level: int | str, format: str) -> None:
    """logging.basicConfig whose handlers scrub secrets from every record."""
    logging.basicConfig(level=level, format=format)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubSecrets) for f in handler.filters):
            handler.addFilter(ScrubSecrets())
