"""The sinks FunnelPulse always had, on the `Sink` interface with their behaviour unchanged:
console, file (JSON lines), webhook (JSON POST), Slack (incoming webhook) and e-mail (SMTP)."""

from __future__ import annotations

import json
import os
from typing import ClassVar, TextIO

from ..config import Settings
from ..errors import ConfigError
from ..redact import ENV_SLACK, ENV_SMTP_PASSWORD, ENV_SMTP_USER, ENV_WEBHOOK
from .incidents import Detected
from .sink_base import Sink
from .sinks import (
    _email,
    incident_record,
    post_json,
    slack_escape,
)


class ConsoleSink(Sink):
    name = "console"

    def send(self, notice: Detected, text: str) -> None:
        print(f"ALERT {text}", file=self.stream, flush=True)


class FileSink(Sink):
    name = "file"
    settings: ClassVar[tuple[str, ...]] = ("alert_file",)

    def __init__(self, settings: Settings, stream: TextIO) -> None:
        super().__init__(settings, stream)
        if not settings.alert_file:
            raise ConfigError("The file alert sink needs alert_file (FUNNELPULSE_ALERT_FILE)")

    def send(self, notice: Detected, text: str) -> None:
        with open(self.config.alert_file, "a") as handle:
            handle.write(json.dumps(incident_record(notice, text)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class WebhookSink(Sink):
    name = "webhook"
    secrets: ClassVar[tuple[str, ...]] = (ENV_WEBHOOK,)

    def send(self, notice: Detected, text: str) -> None:
        post_json(
            ENV_WEBHOOK,
            incident_record(notice, text),
            self.key(notice),
            self.config.alert_timeout_s,
        )


class SlackSink(Sink):
    name = "slack"
    secrets: ClassVar[tuple[str, ...]] = (ENV_SLACK,)

    def send(self, notice: Detected, text: str) -> None:
        key = self.key(notice)
        payload = {
            "text": f":rotating_light: {slack_escape(text)}",
            "mrkdwn": False,
            "unfurl_links": False,
            "unfurl_media": False,
            "idempotency_key": key,
        }
        post_json(ENV_SLACK, payload, key, self.config.alert_timeout_s)


class EmailSink(Sink):
    name = "email"
    settings: ClassVar[tuple[str, ...]] = ("smtp_host", "smtp_port", "smtp_from", "smtp_to")
    # optional: with both set the sink logs in over STARTTLS
    optional_secrets: ClassVar[tuple[str, ...]] = (ENV_SMTP_USER, ENV_SMTP_PASSWORD)

    def __init__(self, settings: Settings, stream: TextIO) -> None:
        super().__init__(settings, stream)
        if not settings.smtp_to:
            raise ConfigError("The email alert sink needs smtp_to (FUNNELPULSE_SMTP_TO)")
        self._send = _email(settings)

    def send(self, notice: Detected, text: str) -> None:
        self._send(notice, text)
