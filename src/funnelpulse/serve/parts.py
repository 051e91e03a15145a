"""The supervised parts of `serve`: each runs on its own thread; a crashed part is restarted with
backoff (counted in /metrics, logged, shown in /readyz); a child process that exits 1 (a documented
stop, such as a stream whose offsets are past the topic's end) is not restarted: it shows as
failed, with its error."""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .metrics import Metrics

log = logging.getLogger("funnelpulse.serve")

# A part that ran this long before crashing starts again at the shortest backoff.
HEALTHY_AFTER_S = 60.0


class Part:
    """One supervised part: its state, restarts and last error (shown in /readyz)."""

    def __init__(self, name: str, metrics: Metrics, stop: threading.Event, max_backoff_s: float):
        self.name = name
        self.metrics = metrics
        self.stop = stop
        self.max_backoff_s = max_backoff_s
        self.state = "starting"
        self.restarts = 0
        self.error: str | None = None
        metrics.restarts.labels(name)
        self.thread = threading.Thread(target=self._supervise, name=f"serve-{name}", daemon=True)

    def start(self) -> Part:
        self.thread.start()
        return self

    def _set(self, state: str) -> None:
        self.state = state
        self.metrics.part_up.labels(self.name).set(1 if state == "up" else 0)
        self.metrics.part_failed.labels(self.name).set(1 if state == "failed" else 0)

    def run_once(self) -> int | None:
        """Run the part until it ends: None when asked to stop, else an exit code."""
        raise NotImplementedError

    def request_stop(self) -> None:
        """Ask a running part to end (called once, when serve stops)."""

    def _supervise(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            began = time.monotonic()
            self._set("up")
            try:
                code = self.run_once()
            except Exception as exc:  # a crash: restarted below
                log.exception("%s crashed", self.name)
                self.error = f"{type(exc).__name__}: {exc}"
                code = -1
            if self.stop.is_set() or code is None:
                break
            if code == 1:  # a documented stop: not restarted
                self._set("failed")
                log.error("%s stopped with an error and is not restarted: %s", self.name,
                          self.error or "exit 1")
                return
            if time.monotonic() - began > HEALTHY_AFTER_S:
                attempt = 0
            delay = min(2.0**attempt, self.max_backoff_s)
            attempt += 1
            self.restarts += 1
            self.metrics.restarts.labels(self.name).inc()
            self._set("backoff")
            log.warning("%s ended (%s); restart %d in %.0f s", self.name,
                        self.error or f"exit {code}", self.restarts, delay)
            self.stop.wait(delay)
        self._set("stopped")

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "error": self.error}


class ProcessPart(Part):
    """A child process (the stream, the dashboard): killed with serve even after a kill -9 of
    serve (the kernel signals it when its parent dies)."""

    def __init__(self, name: str, command: list[str], *args: Any,
                 on_line: Callable[[str], None] = lambda line: None) -> None:
        super().__init__(name, *args)
        self.command = command
        self.on_line = on_line
        self.proc: subprocess.Popen[bytes] | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=20)

    def run_once(self) -> int | None:
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.tail.append(line)
                self.on_line(line)
                log.info("[%s] %s", self.name, line)
        code = self.proc.wait()
        errors = [t for t in self.tail if t.startswith("Error:")]
        self.error = errors[-1] if errors else (self.tail[-1] if self.tail else f"exit {code}")
        return None if self.stop.is_set() else code

    def request_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


class LoopPart(Part):
    """A part that runs in this process: `step` is called until serve stops, `poll_s` apart; an
    exception is a crash (restarted with backoff)."""

    def __init__(self, name: str, step: Callable[[], None], poll_s: Callable[[], float],
                 *args: Any) -> None:
        super().__init__(name, *args)
        self.step = step
        self.poll_s = poll_s

    def run_once(self) -> int | None:
        while not self.stop.is_set():
            self.step()
            self.error = None
            self.stop.wait(self.poll_s())
        return None


class ServerPart(Part):
    """The HTTP server (API, health, metrics) on a socket bound before serve reports ready."""

    def __init__(self, name: str, make_server: Callable[[], Any], sockets: list[Any],
                 *args: Any) -> None:
        super().__init__(name, *args)
        self.make_server = make_server
        self.sockets = sockets
        self.server: Any = None

    def run_once(self) -> int | None:
        self.server = self.make_server()
        self.server.run(sockets=self.sockets)
        return None if self.stop.is_set() else -1

    def request_stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True


def _die_with_parent() -> None:
    """In the child: ask the kernel for SIGTERM when serve dies, even by kill -9 (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
