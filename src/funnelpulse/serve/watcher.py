"""The watcher part of `serve`: files landing in watched folders become cycles of ingest, an
incremental build, detect and (with alerting on) alert.

A file is taken by the landing rule (streaming/landing.py). What was ingested is read from the
warehouse itself (each bronze and quarantine row names its source file and the content identity
of the file), so a restart after a kill -9 at any moment neither skips a file nor ingests one
twice. A cycle holds the writer lock from its first ingest to its last alert, so a manual command
waits its turn. A cycle that ingested something records `pending` before its build and clears it
after its alert step: a process killed in between finishes that work first when it starts again.
A file that fails (not REES46, unreadable) is recorded with its reason in
`_funnelpulse/serve/failed.json` and not tried again until its size or modification time change.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .. import tables
from .. import warehouse as wh
from ..errors import InputError
from ..raw_lines import fingerprint
from ..streaming.landing import Landing, signature
from .metrics import Metrics

log = logging.getLogger("funnelpulse.serve")

STATE_DIR = ("_funnelpulse", "serve")
# Days before the first rebuilt date that the reference method scores again (the seasonal detect
# is incremental and finds them itself): an incident that ended there is still in view, so its
# resolution is sent.
DETECT_MARGIN_DAYS = 2


class Stopping(Exception):
    """SIGTERM arrived: the cycle ends after the step in flight."""


@dataclass
class CycleReport:
    """What one cycle did, for the log line and /readyz."""

    files: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    bronze_rows: int = 0
    quarantined_rows: int = 0
    built: str = ""
    anomalies: int = 0
    alerts_sent: int = 0
    alerts_failed: int = 0
    seconds: float = 0.0
    error: str | None = None

    def line(self) -> str:
        text = (
            f"cycle: {len(self.files)} file(s) ingested, {len(self.failed)} failed, "
            f"{self.bronze_rows} rows to bronze, {self.quarantined_rows} to quarantine"
        )
        if self.built:
            text += f"; build {self.built}; detect {self.anomalies} anomalies"
            text += f"; alerts {self.alerts_sent} sent, {self.alerts_failed} failed"
        text += f" in {self.seconds:.1f} s"
        if self.error:
            text += f"; stopped: {self.error}"
        return text

    def fields(self) -> dict[str, Any]:
        return {
            "event": "cycle",
            "files": self.files,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "bronze_rows": self.bronze_rows,
            "quarantined_rows": self.quarantined_rows,
            "built": self.built,
            "anomalies": self.anomalies,
            "alerts_sent": self.alerts_sent,
            "alerts_failed": self.alerts_failed,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


class State:
    """The watcher's own record in the warehouse: failed files, and a cycle left unfinished."""

    def __init__(self, warehouse: str) -> None:
        self.folder = Path(warehouse, *STATE_DIR)
        self.failed: dict[str, dict[str, Any]] = self._read("failed.json", {})
        self.pending: bool = bool(self._read("pending.json", {}).get("pending"))

    def _read(self, name: str, default: Any) -> Any:
        try:
            return json.loads((self.folder / name).read_text())
        except (OSError, ValueError):
            return default

    def _write(self, name: str, body: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "w") as handle:
            handle.write(json.dumps(body, indent=1, sort_keys=True))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.folder / name)  # whole, before or after

    def set_pending(self, pending: bool) -> None:
        if pending != self.pending:
            self._write("pending.json", {"pending": pending, "at": time.time()})
            self.pending = pending

    def fail(self, path: str, stat: os.stat_result, reason: str) -> None:
        size, mtime_ns = signature(stat)
        self.failed[path] = {"size": size, "mtime_ns": mtime_ns, "reason": reason,
                             "at": time.time()}
        self._write("failed.json", self.failed)

    def forget(self, path: str) -> None:
        if self.failed.pop(path, None) is not None:
            self._write("failed.json", self.failed)

    def still_failed(self, path: str, stat: os.stat_result) -> bool:
        seen = self.failed.get(path)
        return seen is not None and (seen["size"], seen["mtime_ns"]) == signature(stat)


def ingested_identities(warehouse: str) -> dict[str, set[str]]:
    """Per source file, the content identities its rows in bronze and quarantine carry."""
    from ..localdb import connect

    found: dict[str, set[str]] = {}
    for name in (tables.BRONZE, tables.QUARANTINE):
        path = tables.table_path(warehouse, name)
        if not tables.is_delta(path):
            continue
        con = connect()
        try:
            con.register("t", tables.dataset(path))
            rows = con.execute("SELECT DISTINCT source_file, ingest_id FROM t").fetchall()
        finally:
            con.close()
        for source, identity in rows:
            found.setdefault(source, set()).add(identity)
    return found


class Watcher:
    """Looks at the landing folders and runs the cycles (see the module doc)."""

    def __init__(
        self,
        pipeline: Any,
        folders: list[str],
        metrics: Metrics,
        *,
        alert: bool,
        sinks: list[str] | None,
        engine: str | None,
        stopping: Callable[[], bool] = lambda: False,
        alert_retry_s: float = 60.0,
    ) -> None:
        self.metrics = metrics
        self.alert_retry_s = alert_retry_s
        self.stopping = stopping
        self.lock = threading.Lock()  # reconfigure (SIGHUP) vs a cycle
        self.configure(pipeline, folders, alert=alert, sinks=sinks, engine=engine)
        self.state = State(self.warehouse)
        self.known: dict[str, set[str]] = {}
        self.identities: set[str] = set()
        self.looked: dict[str, tuple[int, int]] = {}  # path -> signature already judged done
        self.missing: set[str] = set()
        self.last: CycleReport | None = None
        self.last_ok: bool | None = None
        self.ready = False  # start() done since the last crash
        self.running = False  # a cycle holds the writer lock now
        self.retry_at = 0.0  # monotonic time before which an unfinished cycle is not retried
        self.last_file_at = time.time()
        self.metrics.last_file.set(self.last_file_at)
        self.metrics.files_failing.set(len(self.state.failed))

    def configure(
        self, pipeline: Any, folders: list[str], *, alert: bool, sinks: list[str] | None,
        engine: str | None,
    ) -> None:
        with self.lock:
            self.pipeline = pipeline
            self.warehouse = pipeline.warehouse
            self.folders = [Path(f) for f in folders]
            self.landing = Landing(pipeline.settings.settle_s)
            self.alert = alert
            self.sinks = sinks
            self.engine = engine

    def start(self) -> None:
        """Finish what a killed process left (a half-done ingest or build), then learn what the
        warehouse already holds."""
        with wh.writer_lock(self.warehouse):
            wh.recover(self.warehouse)
            self.known = ingested_identities(self.warehouse)
        self.looked = {}
        self.ready = True
        self.identities = {i for ids in self.known.values() for i in ids}

    # -- looking ------------------------------------------------------------------------------

    def landed(self) -> list[tuple[Path, os.stat_result, str]]:
        """Settled files not ingested yet (or changed since), in landing order, with identity."""
        found: list[tuple[Path, os.stat_result, str]] = []
        for folder in self.folders:
            try:
                candidates = self.landing.candidates(folder)
            except (FileNotFoundError, NotADirectoryError):
                if str(folder) not in self.missing:
                    log.warning("watched folder %s is missing; it is watched again when it "
                                "comes back", folder)
                    self.missing.add(str(folder))
                continue
            if str(folder) in self.missing:
                log.info("watched folder %s is back", folder)
                self.missing.discard(str(folder))
            for path, stat in candidates:
                source = str(path.resolve())
                if self.looked.get(source) == signature(stat):
                    continue
                if self.state.still_failed(source, stat):
                    continue
                try:
                    identity = fingerprint(path)
                except FileNotFoundError:  # removed since the listing
                    continue
                except OSError as exc:  # unreadable (permissions): failed until it changes
                    reason = f"{path}: cannot be read ({exc.strerror or exc}). Fix its permissions"
                    log.warning("%s failed and is not retried until it changes: %s", path, reason)
                    self.state.fail(source, stat, reason)
                    self.metrics.files_failed.inc()
                    self.metrics.files_failing.set(len(self.state.failed))
                    continue
                if identity in self.known.get(source, set()):
                    self.looked[source] = signature(stat)
                    continue
                if identity in self.identities:
                    log.info("%s has the same content as a file already ingested; skipped",
                             path)
                    self.looked[source] = signature(stat)
                    continue
                found.append((path, stat, identity))
        self.metrics.folders_missing.set(len(self.missing))
        found.sort(key=lambda f: (f[1].st_mtime_ns, f[0].name))
        return found

    # -- a cycle ------------------------------------------------------------------------------

    def _check_stop(self) -> None:
        if self.stopping():
            raise Stopping("stop asked (SIGTERM); the rest is done at the next start")

    def cycle(self, files: list[tuple[Path, os.stat_result, str]]) -> CycleReport | None:
        """Ingest `files`, then build, detect and alert when anything changed (or a cycle was
        left unfinished). None when there was nothing to do."""
        if not files and (not self.state.pending or time.monotonic() < self.retry_at):
            return None
        report = CycleReport()
        started = time.monotonic()
        try:
            with self.lock, wh.writer_lock(self.warehouse):
                self.running = True
                try:
                    self._ingest(files, report)
                    if self.state.pending:
                        self._check_stop()
                        self._rest(report)
                finally:
                    self.running = False
        except Stopping as exc:
            report.error = str(exc)
        except Exception as exc:
            self.ready = False  # start over: recovery, and what the warehouse holds
            report.error = f"{type(exc).__name__}: {exc}"
            report.seconds = time.monotonic() - started
            self._finish(report, ok=False)
            raise
        report.seconds = time.monotonic() - started
        self._finish(report, ok=report.error is None)
        return report

    def _finish(self, report: CycleReport, ok: bool) -> None:
        self.last, self.last_ok = report, ok
        self.metrics.cycles.labels("ok" if ok else "failed").inc()
        self.metrics.cycle_seconds.observe(report.seconds)
        self.metrics.files_failing.set(len(self.state.failed))
        log.log(logging.INFO if ok else logging.ERROR, report.line(),
                extra={"fields": report.fields()})

    def _ingest(self, files: list[tuple[Path, os.stat_result, str]], report: CycleReport) -> None:
        for path, stat, identity in files:
            self._check_stop()
            source = str(path.resolve())
            self.metrics.files_seen.inc()
            self.last_file_at = time.time()
            self.metrics.last_file.set(self.last_file_at)
            try:
                if signature(os.stat(path)) != signature(stat):
                    self.landing.forget(path)  # written to again: taken once it settles again
                    continue
                self.state.set_pending(True)  # before the first commit that needs a build
                result = self.pipeline.ingest([path], engine=self.engine)
            except FileNotFoundError:
                continue  # removed since it was seen
            except InputError as exc:
                reason = str(exc)
                log.warning("%s failed and is not retried until it changes: %s", path, reason)
                self.state.fail(source, stat, reason)
                self.metrics.files_failed.inc()
                report.failed[source] = reason
                continue
            self.state.forget(source)
            self.known[source] = {identity}
            self.identities.add(identity)
            self.looked[source] = signature(stat)
            report.files.append(source)
            report.bronze_rows += result.bronze_rows
            report.quarantined_rows += result.quarantined_rows
            self.metrics.files_ingested.inc()
            self.metrics.rows.labels("bronze").inc(result.bronze_rows)
            self.metrics.rows.labels("quarantine").inc(result.quarantined_rows)
        if report.files:
            self.metrics.last_success.labels("ingest").set(time.time())

    def _rest(self, report: CycleReport) -> None:
        """Incremental build, detect and alert; `pending` is cleared only after all three."""
        if not tables.is_delta(tables.table_path(self.warehouse, tables.BRONZE)):
            self.state.set_pending(False)  # every file failed: nothing to build
            return
        built = self.pipeline.build(engine=self.engine)
        report.built = f"{len(built.dates)} date(s)"
        self.metrics.last_success.labels("build").set(time.time())
        self._check_stop()
        # The seasonal detect is incremental: it re-scores what the rebuilt dates reach and
        # keeps a record, so the next cycle (or a manual detect) does the same. The reference
        # method is not: it scores the hours from just before the rebuilt dates (a baseline
        # looks only back, so earlier hours score as before); with nothing rebuilt, all.
        since = None
        if self.pipeline.settings.detect_method != "seasonal" and built.dates:
            since = min(built.dates) - timedelta(days=DETECT_MARGIN_DAYS)
        found = self.pipeline.detect(since=since, engine=self.engine)
        report.anomalies = found.anomalies.num_rows
        self.metrics.last_success.labels("detect").set(time.time())
        if self.alert:
            self._check_stop()
            sent = self.pipeline.alert(found, self.sinks)
            report.alerts_sent, report.alerts_failed = sent.sent, sent.failed + sent.pending
            for name, counts in sorted(sent.by_sink.items()):
                self.metrics.alerts_sent.labels(name).inc(counts["sent"])
                self.metrics.alerts_failed.labels(name).inc(counts["failed"] + counts["pending"])
            if not sent.ok:
                # Undelivered alerts: the cycle stays unfinished and its detect and alert run
                # again in alert_retry_s (same keys, as a rerun of `detect --alert`).
                self.retry_at = time.monotonic() + self.alert_retry_s
                log.warning("%s; retried in %g s", sent.problem(), self.alert_retry_s)
                return
            self.metrics.last_success.labels("alert").set(time.time())
        self.state.set_pending(False)

    def status(self) -> dict[str, Any]:
        """The watcher's part of /readyz."""
        return {
            "folders": [str(f) for f in self.folders],
            "missing_folders": sorted(self.missing),
            "waiting_files": self.landing.waiting,
            "failed_files": {p: r["reason"] for p, r in sorted(self.state.failed.items())},
            "last_cycle_ok": self.last_ok,
            "last_cycle": None if self.last is None else self.last.fields(),
            "unfinished_cycle": self.state.pending,
            "cycle_running": self.running,
            "last_file_at": self.last_file_at,
        }
