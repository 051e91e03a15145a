"""Keeps a stream's live tables healthy for weeks: a MERGE every second or two would otherwise
grow a long Delta log, tombstoned files and small files, and reads slow down by the hour.

Checkpoints bound what a reader replays from the log; compaction merges small files; vacuum
removes files that no version newer than the retention uses, and old log entries expire with
them. The retention (setting `stream_retention_s`, default 1 hour) only has to outlast one read:
a reader lists a version's files and reads them in tens of milliseconds, and files a newer version
removed stay on disk for the retention. A restart needs only the newest batch commit, and the log
is trimmed only right after a batch commits, of entries older than the retention (at least 10 s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import faults, tables
from ..errors import FunnelPulseError
from ..warehouse import vacuum_table

log = logging.getLogger(__name__)

DEFAULT_RETENTION_S = 3600
CHECKPOINT_EVERY = 10  # batches: a reader replays at most 9 commits past a checkpoint
COMPACT_EVERY = 1000  # batches, or sooner: see Maintenance.compact_every_s
MAX_COMPACT_INTERVAL_S = 300.0


def table_config(retention_s: int = DEFAULT_RETENTION_S) -> dict[str, str]:
    """Table properties of a live table: log entries and removed files older than this go."""
    return {
        "delta.logRetentionDuration": f"interval {int(retention_s)} seconds",
        "delta.deletedFileRetentionDuration": f"interval {int(retention_s)} seconds",
        "delta.checkpointInterval": str(CHECKPOINT_EVERY),
    }


LIVE_TABLE_CONFIG = table_config()


@dataclass
class Maintenance:
    """Runs after committed batches: a checkpoint every `checkpoint_every` batches; compaction
    and vacuum every `compact_every` batches or once `compact_every_s` seconds have passed since
    the last (by default a quarter of the retention, at most 5 minutes), so a slow stream is kept
    tidy too. Between two vacuums removed files pile up for the retention plus the interval, so
    a quarter keeps what is on disk within 1.25x of its least; vacuuming once per retention let
    it swing 2x by the moment of looking alone."""

    paths: Sequence[str]
    checkpoint_every: int = CHECKPOINT_EVERY
    compact_every: int = COMPACT_EVERY
    retention_s: int = DEFAULT_RETENTION_S
    compact_every_s: float | None = None
    _last_compact: float = field(default_factory=time.monotonic)
    _configured: set[str] = field(default_factory=set)
    runs: int = 0  # compactions done (all tables in one run)

    def __post_init__(self) -> None:
        if self.compact_every_s is None:
            self.compact_every_s = min(self.retention_s / 4, MAX_COMPACT_INTERVAL_S)

    def after_batch(self, batch: int) -> None:
        for path in self.paths:
            if path not in self._configured and tables.is_delta(path):
                self._configure(path)
        if batch <= 0:
            return
        compact = batch % self.compact_every == 0 or (
            time.monotonic() - self._last_compact >= (self.compact_every_s or 0.0)
        )
        if batch % self.checkpoint_every and not compact:
            return
        if compact:
            self._last_compact = time.monotonic()
            self.runs += 1
        for path in self.paths:
            if tables.is_delta(path):
                self._maintain(path, compact)

    def _maintain(self, path: str, compact: bool) -> None:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        clock = time.perf_counter()
        try:
            table = DeltaTable(path)
            table.create_checkpoint()
            if not compact:
                return
            table.optimize.compact()
            # None: the table's own delta.deletedFileRetentionDuration (retention_s, set above).
            # full: the default mode sees only files removed since the last checkpoint, and a
            # checkpoint always comes before a removal expires, so it would never delete any.
            # Files a running process may still need are kept (running.py): vacuum_table.
            removed = (
                table.vacuum(retention_hours=None, dry_run=False, full=True)
                if "://" in path
                else list(vacuum_table(path, None, dry_run=False))
            )
            table.cleanup_metadata()
            if removed:
                faults.checkpoint("stream.vacuumed")  # files and log entries gone, for tests
            log.info(
                "maintenance of %s: checkpoint, compaction, %d old files removed in %.2f s",
                path.rstrip("/").rsplit("/", 1)[-1],
                len(removed),
                time.perf_counter() - clock,
            )
        except (DeltaError, OSError, FunnelPulseError) as exc:  # housekeeping never stops it
            log.warning("maintenance of %s failed (%s); retried later", path, exc)

    def _configure(self, path: str) -> None:
        """Give a table this run's retention, once per run (a table made by an earlier run, or
        by the buckets' first MERGE, keeps its own until then)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        wanted = table_config(self.retention_s)
        try:
            table = DeltaTable(path)
            have = table.metadata().configuration
            if any(have.get(k) != v for k, v in wanted.items()):
                table.alter.set_table_properties(wanted)
        except (DeltaError, OSError) as exc:
            log.warning("could not set the retention of %s (%s); retried later", path, exc)
            return
        self._configured.add(path)
