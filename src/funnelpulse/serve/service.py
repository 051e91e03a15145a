"""`funnelpulse serve`: the whole monitor as one supervised service.

Parts: the watcher (files landing -> ingest, incremental build, detect, alert), the HTTP server
(the read API plus /healthz, /readyz and /metrics), and as child processes the live stream
(`--kafka`) and the dashboard. SIGTERM (or Ctrl-C) finishes the step in flight, stops every part
and returns 0; SIGHUP reloads the configuration (folders, alerting, detection settings).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..running import Registration
from . import settings as serve_settings
from .digest import DigestSchedule, parse_at, wall_clock
from .metrics import Metrics
from .parts import LoopPart, Part, ProcessPart, ServerPart
from .watcher import Watcher

log = logging.getLogger("funnelpulse.serve")
BATCH_LINE = re.compile(r"\bbatch \d+: ([\d,]+) events")


class JsonLines(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and a record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        body.update(getattr(record, "fields", {}))
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def setup_logging(fmt: str) -> None:
    from ..redact import scrubbed_logging

    text = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    scrubbed_logging(logging.INFO, text)
    root = logging.getLogger()
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    for handler in root.handlers:
        handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(text))
    for noisy in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@dataclass
class Sources:
    """Where the settings come from, to read them again on SIGHUP."""

    config: str | None
    warehouse: str | None
    flags: dict[str, Any]


class Service:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.pipeline, self.opts = self._load()
        self.metrics = Metrics()
        self.stop = threading.Event()
        self.reload_asked = threading.Event()
        self.parts: list[Part] = []
        self.watcher: Watcher | None = None
        self.mirrors: list[Any] = []
        self.started_at = time.time()
        self.clock = wall_clock()  # what the digest is scheduled by (digest.py)
        self.digest: DigestSchedule | None = None

    def _load(self) -> tuple[Any, serve_settings.ServeSettings]:
        from ..config import load_settings
        from ..pipeline import Pipeline

        flags = dict(self.sources.flags)
        opts = serve_settings.load(self.sources.config, **flags)
        overrides: dict[str, Any] = {"warehouse": self.sources.warehouse}
        if opts.engine:
            overrides["engine"] = opts.engine
        if opts.master:
            overrides["spark_master"] = opts.master
        settings = load_settings(self.sources.config, **overrides)
        if opts.alert:  # a sink that cannot deliver is refused before anything starts
            settings.check_sinks(list(opts.sinks) or None)
        if opts.digest_at:
            settings.check_sinks(digest_sinks(opts, settings))
        if "://" not in settings.warehouse_path:  # an empty warehouse to start from is fine
            Path(settings.warehouse_path).mkdir(parents=True, exist_ok=True)
        return Pipeline(settings), opts

    # -- the parts ----------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        opts = self.opts
        family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((opts.host, opts.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"Cannot listen on {opts.host}:{opts.port} ({exc.strerror}). Another program "
                "uses it: stop it, or give --port"
            ) from exc
        sock.listen(128)
        sock.set_inheritable(False)
        return sock

    def _server(self) -> Any:
        import uvicorn

        from ..api import TOKEN_ENV, create_app

        app = create_app(self.pipeline.warehouse, os.environ.get(TOKEN_ENV) or None)
        from fastapi.responses import JSONResponse, Response

        @app.get("/readyz", summary="Readiness (never needs the token)")
        async def readyz() -> Any:
            ready, body = self.readiness()
            return JSONResponse(body, status_code=200 if ready else 503)

        @app.get("/metrics", summary="Prometheus metrics")
        async def metrics() -> Any:
            from prometheus_client import CONTENT_TYPE_LATEST

            if self.lag_reported:
                self.stream_lag()

            return Response(self.metrics.text(), media_type=CONTENT_TYPE_LATEST)

        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        return uvicorn.Server(config)

    def _child(self, args: list[str]) -> list[str]:
        command = [sys.executable, "-m", "funnelpulse", "--warehouse", self.pipeline.warehouse]
        if self.sources.config:
            command += ["--config", self.sources.config]
        return command + args

    def _watch_step(self) -> None:
        assert self.watcher is not None
        if not self.watcher.ready:
            self.watcher.start()  # recovery and what the warehouse holds (again after a crash)
        for mirror in self.mirrors:
            mirror.sync()  # gs:// objects into their local mirror folders (remote.py)
        files = self.watcher.landed()
        if files or self.watcher.state.pending:
            with self.beat.busy():  # vacuum keeps what the cycle writes (running.py)
                self.watcher.cycle(files)
        silent_h = (time.time() - self.watcher.last_file_at) / 3600
        if silent_h > self.opts.no_files_hours and not getattr(self, "_told_silent", False):
            log.warning("no file landed for %.1f h (no_files_hours %g)", silent_h,
                        self.opts.no_files_hours)
            self._told_silent = True
        elif silent_h <= self.opts.no_files_hours:
            self._told_silent = False
        watch = self._no_files_watch()
        if watch is not None:  # with --alert: one no-data incident per silence (no_data.py)
            if files:
                watch.arrived()
            else:
                watch.tick()

    def _no_files_watch(self) -> Any:
        """The no-data watch of the landing folders (with --alert), made again when a reload
        changes what it depends on; a new one keeps the time of the last file."""
        opts = self.opts
        if not opts.alert:
            self._files_watch: Any = None
            return None
        key = (opts.no_files_hours, opts.sinks, id(self.pipeline))
        current = getattr(self, "_files_watch", None)
        if current is None or getattr(self, "_files_watch_key", None) != key:
            from ..anomaly.no_data import NoDataWatch

            watch = NoDataWatch(
                self.pipeline.warehouse, self.pipeline.settings, list(opts.sinks) or None,
                files=True, limit_s=opts.no_files_hours * 3600,
            )
            if current is not None:
                watch.last_arrival = current.last_arrival
                watch.last_arrival_at = current.last_arrival_at
            self._files_watch = watch
            self._files_watch_key: tuple[Any, ...] = key
        return self._files_watch

    def _folders(self, opts: serve_settings.ServeSettings, pipeline: Any = None) -> list[str]:
        """The local folders to watch: a gs:// location is watched through its mirror."""
        from .remote import Mirror

        warehouse = (pipeline or self.pipeline).warehouse
        self.mirrors = [Mirror(w, warehouse) for w in opts.watch if w.startswith("gs://")]
        by_url = {m.url: str(m.local) for m in self.mirrors}
        return [by_url.get(w, w) for w in opts.watch]

    def _stream_line(self, line: str) -> None:
        """The stream logs one line per batch: `batch N: 1,234 events (...)`."""
        found = BATCH_LINE.search(line)
        if found:
            self.metrics.stream_events.inc(int(found.group(1).replace(",", "")))
            self.metrics.stream_batches.inc()
            self.metrics.stream_last_batch.set(time.time())

    def start(self) -> None:
        opts = self.opts
        args = (self.metrics, self.stop, opts.restart_max_s)
        sock = self._bind()
        self.beat = Registration(self.pipeline.warehouse, "serve").start()
        self.parts.append(ServerPart("api", self._server, [sock], *args))
        if opts.watch:
            self.watcher = Watcher(
                self.pipeline, self._folders(opts), self.metrics, alert=opts.alert,
                sinks=list(opts.sinks) or None, engine=opts.engine or None,
                stopping=self.stop.is_set, alert_retry_s=opts.alert_retry_s,
            )
            self.parts.append(LoopPart("watcher", self._watch_step, lambda: self.opts.poll_s,
                                       *args))
        if opts.digest_at:
            self.digest = DigestSchedule(
                self.pipeline.warehouse, self.pipeline.settings, parse_at(opts.digest_at),
                digest_sinks(opts, self.pipeline.settings), opts.alert_retry_s, self.clock,
            )
            self.parts.append(LoopPart("digest", self.digest.step, lambda: self.opts.poll_s,
                                       *args))
        if opts.kafka:
            stream = ["stream", "--source", opts.kafka]
            if opts.alert:
                stream.append("--alert")
                for sink in opts.sinks:
                    stream += ["--sink", sink]
            if opts.engine:
                stream += ["--engine", opts.engine]
            if opts.master:
                stream += ["--master", opts.master]
            self.parts.append(
                ProcessPart("stream", self._child(stream), *args, on_line=self._stream_line)
            )
        if opts.dashboard_port:
            dash = ["dashboard", "--host", opts.host, "--port", str(opts.dashboard_port)]
            self.parts.append(ProcessPart("dashboard", self._child(dash), *args))
        for part in self.parts:
            part.start()
        log.info(
            "serving %s on http://%s:%d (health /healthz, /readyz; metrics /metrics); parts: %s",
            self.pipeline.warehouse, opts.host, opts.port, ", ".join(p.name for p in self.parts),
        )

    def stream_lag(self) -> dict[str, Any]:
        """The live stream's lag from its status file (streaming/status.py), into the gauges.

        `lag_s`: seconds since the stream last had nothing left to read (since serve started,
        while the stream has not reported yet); it grows while the stream is stuck or dead."""
        from datetime import datetime

        from ..streaming import status as stream_status

        now = time.time()
        found = stream_status.read(self.checkpoint_dir)
        if found is not None and found.get("at", 0) < self.started_at:
            found = None  # left by an earlier run
        behind = {str(k): int(v) for k, v in (found or {}).get("behind", {}).items()}
        caught = (found or {}).get("caught_up_at") or self.started_at
        lag_s = max(0.0, now - max(caught, self.started_at))
        newest = (found or {}).get("newest_event")
        newest_ts = (
            datetime.fromisoformat(newest).replace(tzinfo=UTC).timestamp() if newest else None
        )
        m = self.metrics
        for partition, n in behind.items():
            m.stream_lag_messages.labels(partition).set(n)
        m.stream_lag_seconds.set(round(lag_s, 3))
        if newest_ts is not None:
            m.stream_newest_event.set(newest_ts)
            m.stream_event_lag_seconds.set(round(now - newest_ts, 3))
        return {
            "reported": found is not None,
            "behind_messages": sum(behind.values()),
            "behind": behind,
            "lag_s": round(lag_s, 3),
            "max_lag_s": self.opts.max_lag_s,
            "newest_event": newest,
        }

    @property
    def lag_reported(self) -> bool:
        """The embedded stream reports its lag; the Spark stream does not (yet)."""
        engine = self.opts.engine or self.pipeline.settings.engine
        return bool(self.opts.kafka) and engine != "spark" and "://" not in self.pipeline.warehouse

    @property
    def checkpoint_dir(self) -> str:
        return str(Path(self.pipeline.warehouse, "_checkpoints", "stream-embedded"))

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        warehouse_ok = os.access(self.pipeline.warehouse, os.R_OK) if "://" not in (
            self.pipeline.warehouse) else True
        parts = {p.name: p.status() for p in self.parts}
        body: dict[str, Any] = {"warehouse_readable": warehouse_ok, "parts": parts}
        ready = warehouse_ok and all(p["state"] == "up" for p in parts.values())
        if self.watcher is not None:
            watch = self.watcher.status()
            watch["no_files_for_hours"] = round((time.time() - watch["last_file_at"]) / 3600, 2)
            body["watcher"] = watch
            ready = ready and watch["last_cycle_ok"] is not False
        if self.lag_reported:
            lag = self.stream_lag()
            if lag["lag_s"] > self.opts.max_lag_s:
                lag["reason"] = (
                    f"the stream has been behind for {lag['lag_s']:.0f} s, over max_lag_s "
                    f"{self.opts.max_lag_s:g} ({lag['behind_messages']:,} messages behind)"
                )
                ready = False
            body["stream"] = lag
        body["ready"] = ready
        return ready, body

    def reload(self) -> None:
        try:
            pipeline, opts = self._load()
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            return
        for name in ("host", "port", "dashboard_port", "kafka"):
            if getattr(opts, name) != getattr(self.opts, name):
                log.warning("%s changed: it takes effect at the next start", name)
                opts = replace(opts, **{name: getattr(self.opts, name)})
        self.pipeline = pipeline
        if self.watcher is not None and opts.watch:
            self.watcher.configure(pipeline, self._folders(opts, pipeline), alert=opts.alert,
                                   sinks=list(opts.sinks) or None, engine=opts.engine or None)
            self.watcher.alert_retry_s = opts.alert_retry_s
        if self.digest is not None:
            self.digest.configure(pipeline.settings, parse_at(opts.digest_at),
                                  digest_sinks(opts, pipeline.settings), opts.alert_retry_s)
        elif opts.digest_at:
            log.warning("digest_at changed: it takes effect at the next start")
        self.opts = opts
        log.info("configuration reloaded")

    def shutdown(self) -> None:
        deadline = time.monotonic() + self.opts.stop_timeout_s
        self.stop.set()
        for part in self.parts:
            part.request_stop()
        for part in self.parts:
            part.thread.join(max(deadline - time.monotonic(), 0.1))
        for part in self.parts:
            if isinstance(part, ProcessPart):
                part.kill()  # still running after the grace period

    def run(self) -> int:
        def asked_to_stop(signum: int, frame: Any) -> None:
            log.info("stopping (signal %d): finishing the step in flight", signum)
            self.stop.set()

        self.start()  # a port in use is an error before any handler is changed
        signal.signal(signal.SIGTERM, asked_to_stop)
        signal.signal(signal.SIGINT, asked_to_stop)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reload_asked.set())
        while not self.stop.wait(0.2):
            if self.reload_asked.is_set():
                self.reload_asked.clear()
                self.reload()
            if not any(p.thread.is_alive() for p in self.parts):
                break
        self.shutdown()
        self.beat.close()
        log.info("stopped")
        return 0


def digest_sinks(opts: serve_settings.ServeSettings, settings: Any) -> list[str]:
    """Where the daily digest goes: `digest_sinks`, else serve's `sinks`, else the configured
    alert sinks."""
    return list(opts.digest_sinks or opts.sinks or settings.alert_sinks)


def serve(config: str | None, warehouse: str | None, **flags: Any) -> int:
    """Run the service until SIGTERM; 0 after a clean stop."""
    service = Service(Sources(config, warehouse, flags))
    setup_logging(service.opts.log_format)
    return service.run()
