"""Secrets never leave in output: every part of every configured secret is scrubbed from messages,
errors and log records, whatever produced them (the CLI's error line, alert delivery errors, logs)."""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import quote, unquote, urlsplit

ENV_WEBHOOK = "FUNNELPULSE_WEBHOOK_URL"
ENV_SLACK = "FUNNELPULSE_SLACK_WEBHOOK_URL"
ENV_SMTP_USER = "FUNNELPULSE_SMTP_USER"
ENV_SMTP_PASSWORD = "FUNNELPULSE_SMTP_PASSWORD"
ENV_PAGERDUTY = "FUNNELPULSE_PAGERDUTY_ROUTING_KEY"
SECRET_ENVS = (ENV_WEBHOOK, ENV_SLACK, ENV_SMTP_PASSWORD, ENV_SMTP_USER, ENV_PAGERDUTY)
# Pieces of a secret shorter than this are not scrubbed on their own (they carry no secret).
MIN_PIECE = 4


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
