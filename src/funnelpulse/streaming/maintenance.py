"""Keeps a stream's live tables healthy for weeks: a MERGE every second or two would otherwise
grow a long Delta log, tombstoned files and small files, and reads slow down by the hour.

Checkpoints bound what a reader replays from the log; compaction merges small files; vacuum
removes files no version newer than the retention window uses, and old log entries expire with
them. The retention (default 1 hour) is far longer than any read of a live table takes, and a
restart only needs the newest commit, so neither a reader nor a restart is ever broken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .. import tables

log = logging.getLogger(__name__)

# Table properties of the live table: log entries and removed files older than this go.
LIVE_TABLE_CONFIG = {
    "delta.logRetentionDuration": "interval 1 hours",
    "delta.deletedFileRetentionDuration": "interval 1 hours",
    "delta.checkpointInterval": "100",
}


@dataclass
class Maintenance:
    """Runs after committed batches: checkpoint every `checkpoint_every` batches, compaction and
    vacuum every `compact_every` batches."""

    paths: Sequence[str]
    checkpoint_every: int = 100
    compact_every: int = 1000
    retention_h: float = 1.0

    def after_batch(self, batch: int) -> None:
        if batch <= 0 or batch % self.checkpoint_every:
            return
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        for path in self.paths:
            if not tables.is_delta(path):
                continue
            clock = time.perf_counter()
            try:
                table = DeltaTable(path)
                table.create_checkpoint()
                if batch % self.compact_every == 0:
                    table.optimize.compact()
                    removed = table.vacuum(
                        retention_hours=int(self.retention_h),
                        enforce_retention_duration=False,
                        dry_run=False,
                    )
                    table.cleanup_metadata()
                    log.info(
                        "maintenance of %s: checkpoint, compaction, %d old files removed in %.2f s",
                        path.rsplit("/", 1)[-1],
                        len(removed),
                        time.perf_counter() - clock,
                    )
            except (DeltaError, OSError) as exc:  # housekeeping must never stop the stream
                log.warning("maintenance of %s failed (%s); retried later", path, exc)
