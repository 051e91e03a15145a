"""The Python API the CLI and the dashboard both call."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from .anomaly.alerts import AlertResult
    from .anomaly.detect import DetectResult
    from .dashboard.data import DashboardData
    from .streaming.replay import ReplayResult
    from .streaming.windows import StreamResult

from . import faults, report, tables
from . import warehouse as safety
from .config import Settings, load_settings
from .console import Progress, SilentProgress
from .engines import Engine, engine_for
from .engines.base import BuildResult, DateRange, StreamOptions
from .errors import ConfigError, FunnelPulseError
from .ingest import IngestResult, check_file

log = logging.getLogger(__name__)


class IngestIncomplete(FunnelPulseError):
    """A file failed after earlier files of the same ingest were committed (`committed` lists them)."""

    def __init__(self, error: Exception, committed: IngestResult) -> None:
        super().__init__(f"{error} ({len(committed.files)} earlier file(s) stay committed)")
        self.error = error
        self.committed = committed


@dataclass(frozen=True)
class DemoResult:
    """What `demo` did: the sample files ingested and the report over the built warehouse."""

    ingested: IngestResult
    report: dict[str, Any]


def sample_files() -> list[Path]:
    """The bundled real REES46 cosmetics samples (see sample/SOURCES.md for credit)."""
    folder = resources.files("funnelpulse.sample")
    return sorted(
        Path(str(folder.joinpath(n.name))) for n in folder.iterdir() if n.name.endswith(".csv.gz")
    )


class Pipeline:
    """A warehouse and the steps that fill it: ingest -> build -> detect -> report."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        progress: Progress | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings or load_settings(**overrides)
        self.progress = progress or SilentProgress()
        tables.delta_location(self.warehouse)  # a path the table storage would misread is refused
        tables.check_reachable(self.warehouse)  # an unreachable store fails fast, not in minutes

    @property
    def warehouse(self) -> str:
        return self.settings.warehouse_path

    def engine(self, name: str | None = None) -> Engine:
        """The engine adapter `name` (default: the configured engine), set up from the settings."""
        return engine_for(name or self.settings.engine, self.settings)

    def ingest(self, paths: Iterable[str | Path], engine: str | None = None) -> IngestResult:
        """Raw files -> bronze_events + quarantine_events (each file all-or-nothing)."""
        started = time.monotonic()
        result = self._ingest(paths, engine)
        log.info(
            "ingest: %d file(s), %d rows to bronze_events, %d to quarantine_events in %.1f s",
            len(result.files),
            result.bronze_rows,
            result.quarantined_rows,
            time.monotonic() - started,
        )
        return result

    def _ingest(self, paths: Iterable[str | Path], engine: str | None) -> IngestResult:
        adapter = self.engine(engine)
        paths = list(paths)
        if adapter.ingests_files_together:  # one cluster job for all files
            return adapter.ingest(self.warehouse, paths, self.progress)
        for path in paths:  # refuse a missing or foreign file before committing any file
            if "://" not in str(path):
                check_file(path)
        if len(paths) < 2:
            return adapter.ingest(self.warehouse, paths, self.progress)
        done = IngestResult()
        for path in paths:
            try:
                done.files += adapter.ingest(self.warehouse, [path], self.progress).files
            except Exception as exc:
                # Earlier files stay committed: say which, so the user re-runs only the rest.
                if done.files:
                    raise IngestIncomplete(exc, done) from exc
                raise
        return done

    def build(
        self,
        since: date | None = None,
        until: date | None = None,
        engine: str | None = None,
        full: bool = False,
        *,
        allow_shrink: bool = False,
    ) -> BuildResult:
        """bronze_events -> silver_events and every gold table, for the UTC dates in range.

        With no range, only the dates whose bronze rows changed since the last build are rebuilt
        (the first build builds everything); `full=True` rebuilds every date. Refused when bronze
        lost rows since the last build that no commit removed, unless `allow_shrink` (the rows
        are gone on purpose)."""
        started = time.monotonic()
        result = self._build(since, until, engine, full, allow_shrink)
        log.info(
            "build (%s): %s in %.1f s",
            result.engine,
            ", ".join(f"{name} {rows:,}" for name, rows in result.rows.items()),
            time.monotonic() - started,
        )
        return result

    def _build(
        self,
        since: date | None,
        until: date | None,
        engine: str | None,
        full: bool,
        allow_shrink: bool,
    ) -> BuildResult:
        if since and until and since > until:  # an empty range would commit nothing, silently
            raise ConfigError(f"since {since} is after until {until}. Swap them")
        if full and (since or until):
            raise ConfigError("--full rebuilds every date: leave out --since and --until")
        return safety.build(
            self.engine(engine),
            self.warehouse,
            DateRange(since, until),
            self.progress,
            full=full,
            allow_shrink=allow_shrink,
        )

    def detect(
        self,
        method: str | None = None,
        since: date | None = None,
        engine: str | None = None,
        full: bool = False,
    ) -> DetectResult:
        """Score every segment-hour and write the anomalies table (and the incidents).

        Re-scores only the hours whose inputs changed since the last detect (the table equals
        scoring everything); `full=True` scores everything again."""
        from .anomaly import detect_state
        from .anomaly.detect import detect

        if full and since:
            raise ConfigError("--full scores every hour: leave out --since")
        started = time.monotonic()
        with safety.writing(self.warehouse, self.progress):
            names = (tables.ANOMALIES, tables.INCIDENTS)
            # The anomalies and incidents commit one after the other: a detect killed between
            # them is undone by the next writing command (warehouse.py), so none sees one new
            # and the other old.
            with safety.journal(
                self.warehouse, "detect", versions=safety.versions(self.warehouse, names)
            ):
                result = detect(
                    self.warehouse,
                    self.settings,
                    method,
                    since,
                    self.progress,
                    engine=engine or self.settings.engine,
                    full=full,
                )
            if result.record is not None:  # written last: it never claims more than was written
                detect_state.write_state(self.warehouse, result.record)
                faults.checkpoint("detect.state_written")
                detect_state.prune_cube(self.warehouse, result.record["dates"])
        log.info(
            "detect (%s): %d anomalies over %d segments x %d hours in %.1f s",
            result.method,
            result.anomalies.num_rows,
            result.segments,
            result.hours,
            time.monotonic() - started,
        )
        return result

    def alert(
        self,
        anomalies: pa.Table | DetectResult,
        sinks: list[str] | None = None,
        progress: Progress | None = None,
        as_of: datetime | None = None,
    ) -> AlertResult:
        """Send one alert per incident to the configured sinks (see README "Guarantees"): the
        incidents of a `detect` result as it recorded them, or those of an anomalies table.
        With `as_of` (a detect result brings its own), the resolution of each incident whose
        evidence has been normal again for `resolve_after_h` hours."""
        from .anomaly.alerts import send_alerts

        started = time.monotonic()
        if isinstance(anomalies, pa.Table):
            rows, incidents = anomalies.to_pylist(), None
        else:
            rows, incidents = anomalies.rows, anomalies.incidents
            as_of = as_of or anomalies.as_of
        result = send_alerts(
            self.warehouse,
            self.settings,
            rows,
            sinks=sinks,
            progress=progress or self.progress,
            as_of=as_of,
            incidents=incidents,
        )
        log.info(
            "alert: %d sent, %d failed, %d already sent, %d in cool-down in %.1f s",
            result.sent,
            result.failed,
            result.skipped,
            result.cooldown,
            time.monotonic() - started,
        )
        return result

    def anomaly(self, anomaly_id: str) -> dict[str, Any]:
        """One anomaly row with its decoded root cause."""
        import json

        from .errors import FunnelPulseError

        path = tables.table_path(self.warehouse, tables.ANOMALIES)
        if not tables.exists(path):
            raise FunnelPulseError("No anomalies table yet. Run `funnelpulse detect` first")
        import pyarrow.compute as pc

        data = tables.read(path)
        rows = data.filter(pc.equal(data["anomaly_id"], anomaly_id)).to_pylist()
        if not rows:  # an incident's id: its strongest anomaly
            members = self._incident_anomalies(anomaly_id)
            rows = data.filter(
                pc.is_in(data["anomaly_id"], pa.array(members, pa.string()))
            ).to_pylist()
            rows.sort(key=lambda r: -abs(r["z"]))
        if not rows:
            raise FunnelPulseError(
                f"No anomaly or incident with id {anomaly_id!r}. List the incidents' ids with "
                "`funnelpulse incidents list`"
            )
        row = rows[0]
        row["root_cause"] = json.loads(row["root_cause"]) if row["root_cause"] else None
        return row

    def _incident_anomalies(self, incident_id: str) -> list[str]:
        """The anomaly ids an incident of the lasting incidents table groups (none if unknown)."""
        import json

        import pyarrow.compute as pc

        path = tables.table_path(self.warehouse, tables.INCIDENTS)
        if not tables.exists(path):
            return []
        data = tables.read(path)
        found = data.filter(pc.equal(data["incident_id"], incident_id)).to_pylist()
        return [str(i) for row in found for i in json.loads(row["anomaly_ids"] or "[]")]

    def evaluate(
        self, labels_path: str | Path, methods: tuple[str, ...] = ("seasonal", "reference")
    ) -> list[Any]:
        """Score each detection method against known incidents (from `generate --inject`)."""
        from .anomaly.detect import detect
        from .anomaly.incidents import evaluate, notified
        from .labels import load_labels

        labels = load_labels(Path(labels_path))
        scores = []
        for method in methods:
            found = detect(self.warehouse, self.settings, method, None, self.progress, write=False)
            scored = max(found.hours - 24 * 3, 0)  # the first 3 days are history, never scored
            notices = notified(
                found.incidents, self.settings.min_severity, self.settings.cooldown_h
            )
            scores.append(evaluate(method, found.incidents, labels, scored, notices))
        return scores

    def report(
        self, top: int = 5, since: date | None = None, until: date | None = None
    ) -> dict[str, Any]:
        """The summary `funnelpulse report` prints, optionally for the UTC dates since..until."""
        safety.check_consistent(self.warehouse)
        return report.summary(self.warehouse, top, since, until)

    def stream(
        self, source: str, engine: str | None = None, options: StreamOptions | None = None
    ) -> StreamResult:
        """Keep the live table current from `kafka://HOST:PORT/TOPIC` or `files://DIR`, exactly
        once: on the embedded engine by default, on Spark Structured Streaming with "spark"."""
        options = options or StreamOptions()
        if options.alert_sinks is not None:  # a sink that cannot deliver is refused first
            self.settings.check_sinks(options.alert_sinks or None)
        adapter = self.engine(engine)
        with safety.stream_lock(self.warehouse):  # one stream per warehouse
            return adapter.stream(self.warehouse, self.settings, source, options)

    def replay(
        self,
        target: str,
        sources: list[str] | None = None,
        speedup: float = 0.0,
        kafka_options: dict[str, str] | None = None,
    ) -> ReplayResult:
        """Publish bronze (or raw files) to `kafka://HOST:PORT/TOPIC` in event-time order."""
        from .streaming import replay as replaying

        return replaying.replay(
            self.warehouse, target, sources or ["bronze"], speedup, self.progress, kafka_options
        )

    def dashboard_data(self) -> DashboardData:
        """The read-only queries the dashboard pages run over this warehouse."""
        from .dashboard.data import DashboardData

        return DashboardData(self.warehouse)

    def table(self, name: str) -> pa.Table:
        return tables.read(tables.table_path(self.warehouse, name))

    def vacuum(
        self, retain_hours: float = safety.DEFAULT_RETAIN_HOURS, dry_run: bool = False
    ) -> dict[str, tuple[int, int]]:
        """Delete files of old table versions and of failed writes: (files, bytes) per table."""
        return safety.vacuum(self.warehouse, retain_hours, dry_run, self.progress)

    def demo(self) -> DemoResult:
        """Ingest the bundled real sample and build every table: what was read, then the report."""
        ingested = self.ingest(sample_files())
        self.build()
        return DemoResult(ingested, self.report())
