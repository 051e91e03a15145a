"""What the embedded stream does for live detection after each batch: MERGE the batch's new
events into the live buckets (before the live table's commit, so a retried batch is skipped
by its transaction version), and, with --alert, score the open window once a bucket completes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..config import Settings
from .buckets import check_bucket_minutes, update_buckets

log = logging.getLogger(__name__)


class OpenWindowHook:
    """Called by the embedded engine: `after_count` inside a batch, `after_commit` after it."""

    def __init__(
        self,
        warehouse: str,
        settings: Settings,
        alert_sinks: Sequence[str] | None,
        result: Any = None,
        bucket_minutes: int | None = None,
        check_every_s: float | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.settings = settings
        self.alert_sinks = list(alert_sinks) if alert_sinks else None
        self.bucket_minutes = check_bucket_minutes(bucket_minutes or settings.live_bucket_minutes)
        # score at most this often (wall clock): at real time a bucket completes every few
        # minutes anyway; this only bounds the work when a backlog or a fast replay streams in
        self.check_every_s = settings.live_check_every_s if check_every_s is None else check_every_s
        self._last_check = float("-inf")
        self._last_bucket: datetime | None = None
        self.checks = 0
        self._keys: list[tuple[str, str]] | None = None  # segments judged, refreshed hourly
        self._keys_at = float("-inf")
        self.result = result  # the stream's result: live alerts count in its totals

    def after_count(
        self,
        con: Any,
        batch: int,
        events_table: str = "fresh",
        removed_table: str | None = None,
    ) -> int:
        """MERGE the batch's new (judged, deduplicated) events into the live buckets, minus the
        events of `removed_table` (the earlier rows of replaced files)."""
        return update_buckets(
            self.warehouse,
            con.sql(f"SELECT * FROM {events_table}"),
            batch_id=batch,
            bucket_minutes=self.bucket_minutes,
            removed=con.sql(f"SELECT * FROM {removed_table}") if removed_table else None,
        )

    def after_commit(self, latest_event: datetime | None) -> None:
        """With --alert: score the open window when a new bucket completed (throttled); a
        failure is logged and the stream goes on."""
        if not self.alert_sinks or latest_event is None:
            return
        from ..anomaly.live_data import segment_keys
        from ..anomaly.live_incidents import check_live
        from ..anomaly.open_window import newest_complete

        latest = latest_event if latest_event.tzinfo else latest_event.replace(tzinfo=UTC)
        newest = newest_complete(latest, self.bucket_minutes)
        due = time.monotonic() - self._last_check >= self.check_every_s
        if not due or (self._last_bucket is not None and newest <= self._last_bucket):
            return
        self._last_check = time.monotonic()
        try:
            if self._keys is None or time.monotonic() - self._keys_at > 3600:
                self._keys = segment_keys(self.warehouse, self.settings.min_views)
                self._keys_at = time.monotonic()
            found = check_live(
                self.warehouse,
                self.settings,
                latest,
                bucket_minutes=self.bucket_minutes,
                sinks=self.alert_sinks,
                keys=self._keys,
            )
        except Exception as exc:  # scoring must never stop the live table
            log.error(
                "open-window check failed (%s: %s); the stream goes on", type(exc).__name__, exc
            )
            return
        self._last_bucket = newest
        self.checks += 1
        if found.delivery:
            if self.result is not None:
                self.result.alerts_sent += found.delivery.sent
                self.result.alerts_failed += found.delivery.failed
            log.info(
                "open window as of %s: %d incidents (%d open), %d alerts sent, %d failed",
                found.as_of,
                len(found.incidents),
                len(found.open),
                found.delivery.sent,
                found.delivery.failed,
            )
