"""Kafka clients for every reader and writer: the user's `kafka.*` options (secrets only from the
environment), and the true end of a partition, which the bundled broker misreports."""

from __future__ import annotations

import logging
import os
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, FunnelPulseError, MissingDependencyError

log = logging.getLogger(__name__)

# librdkafka options that hold secrets: read only from FUNNELPULSE_KAFKA_<KEY> (dots become _).
SECRET_KEYS = (
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
)
# Set by FunnelPulse itself: a user's value would break offsets or delivery guarantees.
OWNED_KEYS = ("bootstrap.servers", "enable.auto.commit", "enable.partition.eof")
DEFAULT_GROUP = "funnelpulse-stream"


def secret_env(key: str) -> str:
    """The environment variable that holds the secret option `key`."""
    return "FUNNELPULSE_KAFKA_" + key.upper().replace(".", "_")


def client_options(options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The user's librdkafka options (from the config file's [kafka] table) plus the secrets found
    in the environment; refuses secrets written in the file and options FunnelPulse owns."""
    out: dict[str, str] = {}
    for key, value in (options or {}).items():
        if key in SECRET_KEYS:
            raise ConfigError(
                f"kafka.{key} must not be written in the config file. "
                f"Set the environment variable {secret_env(key)} instead"
            )
        if key in OWNED_KEYS:
            raise ConfigError(
                f"kafka.{key} is set by FunnelPulse. Remove it from the config file "
                "(give the broker address in kafka://HOST:PORT/TOPIC)"
            )
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    for key in SECRET_KEYS:
        value = os.environ.get(secret_env(key))
        if value:
            out[key] = value
    return out


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` safe to log: secret values replaced by ***."""
    return {k: ("***" if k in SECRET_KEYS else v) for k, v in config.items()}


def _confluent() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        raise MissingDependencyError("confluent-kafka", "kafka") from exc
    return confluent_kafka


def client(kind: str, config: dict[str, Any]) -> Any:
    """A confluent-kafka Consumer or Producer; an option librdkafka refuses is a clean error
    (with any secret value masked)."""
    kafka = _confluent()
    try:
        return getattr(kafka, kind)(config)
    except kafka.KafkaException as exc:
        text = str(exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc)
        for key in SECRET_KEYS:
            if config.get(key):
                text = text.replace(str(config[key]), "***")
        raise ConfigError(
            f"Kafka refused an option: {text}. Fix the [kafka] table of the config file"
        ) from None


def consumer_config(bootstrap: str, options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A consumer that reads by assignment and never commits offsets to the broker (the stream's
    own commits hold them)."""
    config: dict[str, Any] = {
        "group.id": DEFAULT_GROUP,
        "session.timeout.ms": 6000,  # group join is slow on the bundled broker otherwise
        "fetch.max.bytes": 52428800,
        "socket.timeout.ms": 10000,
        "auto.offset.reset": "earliest",
    }
    config.update(options or {})
    config.update(
        {"bootstrap.servers": bootstrap, "enable.auto.commit": False, "enable.partition.eof": True}
    )
    return config


def producer_config(bootstrap: str, options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Batched, lz4-compressed, idempotent-minded producer settings; user options override."""
    config: dict[str, Any] = {
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500000,
        "queue.buffering.max.kbytes": 1048576,
        "message.timeout.ms": 120000,
        "acks": "all",
    }
    consumer_only = {"group.id", "session.timeout.ms", "auto.offset.reset", "fetch.max.bytes"}
    config.update({k: v for k, v in (options or {}).items() if k not in consumer_only})
    config["bootstrap.servers"] = bootstrap
    return config


def partitions(consumer: Any, topic: str, bootstrap: str, timeout_s: float) -> list[int]:
    """The topic's partitions, retrying (with a log line each time) while the broker is down."""
    kafka = _confluent()
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while True:
        try:
            meta = consumer.list_topics(topic, timeout=max(0.5, min(2.0, timeout_s / 3)))
            found = meta.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return sorted(found.partitions)
            problem = f"topic {topic} not found"
        except kafka.KafkaException as exc:
            problem = f"broker unreachable ({exc.args[0].str() if exc.args else exc})"
        if time.monotonic() + delay > deadline:
            raise FunnelPulseError(
                f"Kafka at {bootstrap}: {problem} for {timeout_s:.0f} s. "
                "Start the broker (or create the topic) and run the command again"
            )
        log.warning("Kafka at %s: %s; retrying in %.1f s", bootstrap, problem, delay)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def true_ends(
    bootstrap: str, topic: str, options: Mapping[str, str] | None = None, timeout_s: float = 30.0
) -> dict[int, tuple[int, int]]:
    """(first, end) offsets per partition, where end is the offset after the last record.

    The broker's "latest offset" answer is read from just before it to the end of the partition:
    on Kafka that reads nothing new; the bundled tansu broker answers with the first offset of the
    newest record batch + 1, and reading on finds the true end."""
    kafka = _confluent()
    # The end is known when a fetch comes back empty: the broker holds an empty fetch for
    # fetch.wait.max.ms (500 by default), which would be this call's time; 10 ms is plenty here.
    config = {**consumer_config(bootstrap, options), "fetch.wait.max.ms": 10}
    consumer = client("Consumer", config)
    try:
        found = partitions(consumer, topic, bootstrap, timeout_s)
        marks: dict[int, tuple[int, int]] = {}
        for p in found:
            low, high = consumer.get_watermark_offsets(
                kafka.TopicPartition(topic, p), timeout=min(10.0, timeout_s)
            )
            marks[p] = (low, high)
        pending = {p for p, (low, high) in marks.items() if high > low}
        ends = {p: high for p, (_, high) in marks.items()}
        if pending:
            consumer.assign(
                [kafka.TopicPartition(topic, p, max(marks[p][0], marks[p][1] - 1)) for p in pending]
            )
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            # short polls: a call waits out its whole timeout unless 10,000 messages come, and
            # the end of a partition is known as soon as its end-of-partition event arrives
            for m in consumer.consume(num_messages=10000, timeout=0.02):
                p = m.partition()
                error = m.error()
                if error is not None:
                    if error.code() == kafka.KafkaError._PARTITION_EOF:
                        ends[p] = max(ends[p], m.offset())
                        pending.discard(p)
                    continue
                ends[p] = max(ends[p], m.offset() + 1)
        if pending:
            raise FunnelPulseError(
                f"Kafka at {bootstrap}: the end of {topic} partitions {sorted(pending)} could not "
                f"be read within {timeout_s:.0f} s. Check the broker and run the command again"
            )
        return {p: (marks[p][0], ends[p]) for p in marks}
    finally:
        consumer.close()


def settings_options(config_file: str | Path | None = None) -> dict[str, str]:
    """The librdkafka options of the config file's [kafka] table, with secrets from the
    environment (the same options reach every consumer and producer, on both engines)."""
    return client_options(file_kafka_options(config_file))


def file_kafka_options(config_file: str | Path | None = None) -> dict[str, str]:
    """The [kafka] table of the config file (default ./funnelpulse.toml), dotted keys joined:
    `security.protocol = "SASL_SSL"` and `"security.protocol" = "SASL_SSL"` are the same."""
    path = Path(config_file) if config_file else Path("funnelpulse.toml")
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("kafka", {})
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path} ({exc}). Fix the file") from exc
    if not isinstance(table, dict):
        raise ConfigError(f"In {path}, kafka must be a table: write [kafka]")
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, bool):
            out[prefix] = "true" if value else "false"
        elif isinstance(value, list):
            out[prefix] = ",".join(str(v) for v in value)
        else:
            out[prefix] = str(value)

    walk("", table)
    return out


def file_options(options: Mapping[str, str]) -> dict[str, str]:
    """`options` without secrets: what may travel in a Spark plan (workers read secrets from
    their own environment)."""
    return {k: v for k, v in options.items() if k not in SECRET_KEYS}
