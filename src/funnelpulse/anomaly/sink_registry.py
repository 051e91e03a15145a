"""Every alert sink by name: adding a sink is its own file plus one line here."""

from __future__ import annotations

from typing import TextIO

from ..config import SINKS, Settings
from ..errors import ConfigError
from .sink_alertmanager import AlertmanagerSink
from .sink_base import Sink
from .sink_builtin import ConsoleSink, EmailSink, FileSink, SlackSink, WebhookSink
from .sink_pagerduty import PagerDutySink
from .sinks import Send

REGISTRY: dict[str, type[Sink]] = {
    s.name: s
    for s in (
        ConsoleSink,
        FileSink,
        WebhookSink,
        SlackSink,
        EmailSink,
        PagerDutySink,
        AlertmanagerSink,
    )
}


def make_sink(name: str, settings: Settings, stream: TextIO) -> Sink:
    if name not in REGISTRY:
        raise ConfigError(f"Unknown alert sink {name!r}. Use: {', '.join(SINKS)}")
    return REGISTRY[name](settings, stream)


def sink(name: str, settings: Settings, stream: TextIO) -> Send:
    """The sender of one sink; it raises DeliveryError (already free of secrets) when it fails.

    Each notice goes to the sink's send, acknowledge or resolve by its kind (sink_base.py).
    """
    return make_sink(name, settings, stream).deliver
