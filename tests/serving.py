"""Real servers for the API and SQL tests: `funnelpulse api` / `sql-server` as their own processes
on a free loopback port, stopped (by their own pid) when the test module ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running(
    warehouse: str, command: str, *flags: str, env: dict[str, str] | None = None
) -> Iterator[int]:
    """Start `funnelpulse --warehouse W COMMAND --port P FLAGS` and yield P once it listens."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "funnelpulse",
            "--warehouse",
            warehouse,
            command,
            "--port",
            str(port),
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            if process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"{command} exited: {out.decode()} {err.decode()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{command} did not listen on {port} within 120 s")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
