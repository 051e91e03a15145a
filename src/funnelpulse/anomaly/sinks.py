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
import http.client
import json
import os
import re
import smtplib
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from urllib.parse import urlsplit

from ..config import Settings
from ..redact import ENV_SMTP_PASSWORD, ENV_SMTP_USER, scrub
from .incidents import Detected

REQUEST_TIMEOUT_S = 5.0
KEY_HEADER = "Idempotency-Key"
INCIDENT_HEADER = "X-FunnelPulse-Incident"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

Send = Callable[[Detected, str], None]


class DeliveryError(Exception):
    """A sink could not deliver.

    `permanent`: a retry cannot help (bad URL, HTTP 4xx, a redirect we do not follow).
    `maybe_delivered`: the request went out and no answer came back (a timeout, a dropped
    connection), so the receiver may have taken it: it is not sent again in this run.
    Only a failure that is neither is retried within the run (refused connection, 429, 5xx).
    """

    def __init__(
        self, message: str, permanent: bool = False, maybe_delivered: bool = False
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.maybe_delivered = maybe_delivered


def idempotency_key(incident_id: str) -> str:
    """Stable per incident, safe in any header (the incident id holds free-form segment names)."""
    return "fp-" + hashlib.blake2b(incident_id.encode(), digest_size=16).hexdigest()


def plain(value: object) -> str:
    """A data value as one line of plain text: control characters (newlines, ANSI escapes) removed."""
    return _CONTROL.sub(" ", str(value))


def slack_escape(text: str) -> str:
    """Slack's own escaping: `&`, `<`, `>` (so no links, mentions or `<url|label>` from data)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


class _Redirected(Exception):
    """A redirect answer that is not followed: the alert was not delivered."""

    def __init__(self, code: int, target: str, why: str) -> None:
        super().__init__(why)
        self.code, self.target, self.why = code, target, why


class _KeepMethodRedirects(urllib.request.HTTPRedirectHandler):
    """Follow 307/308 as the same POST with the same body and headers; refuse every other
    redirect (urllib would turn a POST into a body-less GET on 301/302/303, which the receiver
    answers 200 without ever seeing the alert)."""

    def redirect_request(  # type: ignore[override]
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request:
        target = urlsplit(newurl)
        if code not in (307, 308):
            raise _Redirected(code, newurl, "a POST cannot follow it without losing its body")
        if target.scheme not in ("http", "https") or not target.hostname:
            raise _Redirected(code, newurl, "not an http(s) address")
        if urlsplit(req.full_url).scheme == "https" and target.scheme == "http":
            raise _Redirected(code, newurl, "it leaves https for plain http")
        return urllib.request.Request(
            newurl,
            data=req.data,
            headers=dict(req.headers),
            origin_req_host=req.origin_req_host,
            unverifiable=True,
            method=req.get_method(),
        )


_OPENER = urllib.request.build_opener(_KeepMethodRedirects())


def post_json(
    url_env: str,
    payload: Any,
    key: str,
    timeout_s: float = REQUEST_TIMEOUT_S,
    url: str | None = None,
) -> None:
    """POST `payload` with the idempotency key as a header.

    A 307/308 redirect is followed with the same method and body; any other redirect is a
    permanent failure naming its target. HTTP 4xx (but 408/429) is permanent. A failure before
    the request was fully sent, 408, 429 and 5xx are retriable; a timeout or a dropped
    connection while waiting for the answer is `maybe_delivered` (see DeliveryError). The URL
    comes from the environment variable `url_env`, or is `url` (a setting; `url_env` then only
    names it in errors).
    """
    url = url or _checked_url(url_env)
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
        with _OPENER.open(request, timeout=timeout_s) as response:
            if response.status >= 300:
                raise DeliveryError(f"{url_env}: HTTP {response.status}", permanent=True)
    except _Redirected as exc:
        raise DeliveryError(
            scrub(
                f"{url_env}: HTTP {exc.code} redirect to {exc.target} not followed ({exc.why}); "
                f"the alert was not delivered. Set {url_env} to the address it should reach"
            ),
            permanent=True,
        ) from None
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:  # a redirect loop, or a 3xx without a Location
            target = exc.headers.get("Location", "no address") if exc.headers else "no address"
            raise DeliveryError(
                scrub(f"{url_env}: HTTP {exc.code} redirect to {target} not followed"),
                permanent=True,
            ) from None
        permanent = 400 <= exc.code < 500 and exc.code not in (408, 429)
        raise DeliveryError(f"{url_env}: HTTP {exc.code}", permanent=permanent) from None
    except urllib.error.URLError as exc:
        # raised while connecting or sending: the receiver never had the whole request
        raise DeliveryError(scrub(f"cannot reach {url_env}: {exc.reason}")) from None
    except ValueError as exc:  # an address the HTTP client refuses before sending anything
        raise DeliveryError(
            scrub(f"{url_env} is not a valid http(s) URL ({exc})"), permanent=True
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        # the request went out, the answer did not come: it may have arrived
        reason = f"no answer within {timeout_s:g} s"
        if not isinstance(exc, TimeoutError):
            reason = f"the connection ended before an answer ({type(exc).__name__})"
        raise DeliveryError(
            scrub(
                f"{url_env}: {reason}; it may have arrived, so it is not sent again in this "
                "run (the next run sends it with the same idempotency key)"
            ),
            maybe_delivered=True,
        ) from None


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
        where = f"SMTP {settings.smtp_host}:{settings.smtp_port}"
        try:
            smtp = smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.alert_timeout_s
            )
        except (OSError, smtplib.SMTPException) as exc:  # no connection: nothing was sent
            raise DeliveryError(scrub(f"{where}: {exc}")) from None
        try:
            with smtp:
                user, password = os.environ.get(ENV_SMTP_USER), os.environ.get(ENV_SMTP_PASSWORD)
                if user and password:
                    smtp.starttls()
                    smtp.login(user, password)
                smtp.send_message(mail)
        except smtplib.SMTPResponseException as exc:  # the server answered no: not taken
            raise DeliveryError(
                scrub(f"{where}: {exc}"),
                permanent=exc.smtp_code >= 500,
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(scrub(f"{where}: {exc}"), permanent=True) from None
        except (OSError, smtplib.SMTPException) as exc:  # cut off mid-way: it may have arrived
            raise DeliveryError(
                scrub(
                    f"{where}: {exc}; it may have arrived, so it is not sent again in this run "
                    "(the next run sends it with the same X-FunnelPulse-Incident key)"
                ),
                maybe_delivered=True,
            ) from None

    return by_email
