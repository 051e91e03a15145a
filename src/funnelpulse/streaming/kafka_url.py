"""`kafka://host:port/topic` and `files://dir` source/target addresses."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class KafkaAddress:
    bootstrap: str
    topic: str


def parse_kafka(url: str) -> KafkaAddress:
    if not url.startswith("kafka://"):
        raise ConfigError(f"{url!r} is not a Kafka address. Use kafka://HOST:PORT/TOPIC")
    rest = url[len("kafka://") :]
    bootstrap, _, topic = rest.partition("/")
    if not bootstrap or not topic or "/" in topic:
        raise ConfigError(f"{url!r} is not a Kafka address. Use kafka://HOST:PORT/TOPIC")
    return KafkaAddress(bootstrap, topic)
