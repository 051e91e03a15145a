"""The Prometheus metrics of one `serve` process (its own registry, exported at /metrics)."""

from __future__ import annotations

from ..errors import MissingDependencyError

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
except ImportError as exc:  # the `api` extra is not installed
    raise MissingDependencyError("prometheus_client", "api") from exc

STEPS = ("ingest", "build", "detect", "alert")


class Metrics:
    """Every figure /metrics shows; the watcher and the supervisor update them."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = "funnelpulse_"
        self.files_seen = Counter(p + "files_seen", "Landed files taken for a cycle", registry=r)
        self.files_ingested = Counter(p + "files_ingested", "Files ingested", registry=r)
        self.files_failed = Counter(
            p + "files_failed", "Files that failed (not REES46, unreadable)", registry=r
        )
        self.files_failing = Gauge(
            p + "files_failing", "Files now recorded as failed (not retried until changed)",
            registry=r,
        )
        self.rows = Counter(p + "rows", "Rows written by ingest", ["table"], registry=r)
        self.cycles = Counter(p + "cycles", "Watcher cycles by result", ["result"], registry=r)
        self.cycle_seconds = Histogram(
            p + "cycle_duration_seconds",
            "Duration of a watcher cycle (ingest, build, detect, alert)",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.last_success = Gauge(
            p + "last_success_timestamp_seconds",
            "When each step last succeeded (Unix time; 0: never in this process)",
            ["step"],
            registry=r,
        )
        self.last_file = Gauge(
            p + "last_file_landed_timestamp_seconds",
            "When a landed file was last taken (Unix time; the start time until one is)",
            registry=r,
        )
        self.folders_missing = Gauge(
            p + "watch_folders_missing", "Watched folders that do not exist now", registry=r
        )
        self.alerts_sent = Counter(
            p + "alerts_sent", "Alert notices delivered", ["sink"], registry=r
        )
        self.alerts_failed = Counter(
            p + "alerts_failed", "Alert deliveries that failed", ["sink"], registry=r
        )
        self.restarts = Counter(
            p + "part_restarts", "Restarts of a crashed part", ["part"], registry=r
        )
        self.part_up = Gauge(p + "part_up", "1 while the part runs", ["part"], registry=r)
        self.part_failed = Gauge(
            p + "part_failed", "1 when the part stopped for good (exit 1)", ["part"], registry=r
        )
        self.stream_events = Counter(
            p + "stream_events", "Events the live stream read (rate() gives events/s)", registry=r
        )
        self.stream_batches = Counter(p + "stream_batches", "Live stream batches", registry=r)
        self.stream_last_batch = Gauge(
            p + "stream_last_batch_timestamp_seconds", "When the stream last committed a batch",
            registry=r,
        )
        self.stream_lag_messages = Gauge(
            p + "stream_lag_messages",
            "Messages between the stream's position and the topic's end, per partition",
            ["partition"], registry=r,
        )
        self.stream_lag_seconds = Gauge(
            p + "stream_lag_seconds",
            "Seconds since the stream last had read every partition to its end (0: caught up)",
            registry=r,
        )
        self.stream_newest_event = Gauge(
            p + "stream_newest_event_timestamp_seconds",
            "Event time of the newest event the stream read (Unix time; 0: none yet)",
            registry=r,
        )
        self.stream_event_lag_seconds = Gauge(
            p + "stream_event_time_lag_seconds",
            "Wall clock minus the event time of the newest event read",
            registry=r,
        )
        for step in STEPS:
            self.last_success.labels(step)
        for table in ("bronze", "quarantine"):
            self.rows.labels(table)
        for result in ("ok", "failed"):
            self.cycles.labels(result)

    def text(self) -> bytes:
        return generate_latest(self.registry)
