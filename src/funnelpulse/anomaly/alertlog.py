"""The alert lock and delivery journal of a warehouse: what makes a restart or a second run never
resend what was delivered.

One process at a time alerts a warehouse: it holds an exclusive `flock` on
`<warehouse>/_alerts_journal/lock`, which the kernel releases when the process dies, even by
SIGKILL, so a crash never leaves it stuck. Every delivery is journalled (appended and fsync'd)
as "sending" before it is attempted and as "sent"/"failed" right after; the journal is committed
to the `alerts` table at the end of the run, or by the next run if this one crashed. For a
remote warehouse (gs://) the lock and journal live in the local temp folder, so they protect
runs on one machine only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import tables
from ..contract import ALERT_SCHEMA
from ..errors import FunnelPulseError
from ..locks import take_flock

_TIMES = ("incident_start", "incident_end", "recorded_at")
LOCK_WAIT_S = 180.0


class AlertLockTimeout(FunnelPulseError):
    """Another process kept the warehouse's alert lock for longer than we wait."""


def journal_dir(warehouse: str) -> Path:
    if "://" in warehouse:
        digest = hashlib.sha1(warehouse.encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"funnelpulse-alerts-{digest}"
    return Path(warehouse) / "_alerts_journal"


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["incident_id"], row["sink"], row["status"], row["recorded_at"])


class AlertLog:
    """Held while alerting: the lock, the journal, and the delivery history of the warehouse."""

    def __init__(
        self,
        warehouse: str,
        wait_s: float = LOCK_WAIT_S,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.folder = journal_dir(warehouse)
        self.wait_s = wait_s
        self.on_wait = on_wait
        self._lock_fd: int | None = None
        self._journal: Any = None
        self._pending: list[dict[str, Any]] = []

    # -- lock ---------------------------------------------------------------------------

    def __enter__(self) -> AlertLog:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise FunnelPulseError(
                f"Cannot create the alert journal in {self.folder}: {exc.strerror}. "
                "Check free disk space and permissions"
            ) from exc
        on_wait = self.on_wait or (lambda _: None)
        if not take_flock(
            fd, self.wait_s, lambda: on_wait("Waiting for another process that is sending alerts")
        ):
            os.close(fd)
            raise AlertLockTimeout(
                f"Another funnelpulse process has been sending alerts for this warehouse "
                f"for over {self.wait_s:.0f} s. Try again when it has finished"
            )
        self._lock_fd = fd
        try:
            self._recover()
            self._journal = open(self.folder / "journal.jsonl", "a")  # noqa: SIM115
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            self.commit()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- journal ------------------------------------------------------------------------

    def record(self, row: dict[str, Any]) -> None:
        """Append one state of one delivery to the journal and make it durable before returning."""
        line = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
        self._journal.write(json.dumps(line) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self._pending.append(row)

    def _read_journal(self) -> list[dict[str, Any]]:
        path = self.folder / "journal.jsonl"
        if not path.exists():
            return []
        rows = []
        for text in path.read_text().splitlines():
            try:
                row = json.loads(text)
            except ValueError:  # a line cut short by a crash mid-write: its delivery never began
                continue
            for name in _TIMES:
                row[name] = datetime.fromisoformat(row[name])
            rows.append(row)
        return rows

    def _recover(self) -> None:
        """A previous run died before committing its journal: commit what it recorded."""
        self._pending = self._read_journal()
        self.commit()

    def commit(self) -> None:
        """Write the journalled rows to the `alerts` table (once), then empty the journal.

        A "sending" row followed by its outcome is dropped; one without an outcome is kept: that
        delivery was interrupted and may have reached the receiver.
        """
        if not self._pending:
            self._truncate()
            return
        outcome = {
            (r["incident_id"], r["sink"]): r["recorded_at"]
            for r in self._pending
            if r["status"] != "sending"
        }

        def resolved(r: dict[str, Any]) -> bool:
            done = outcome.get((r["incident_id"], r["sink"]))
            return done is not None and done >= r["recorded_at"]

        keep = [r for r in self._pending if r["status"] != "sending" or not resolved(r)]
        present = {_key(r) for r in self.table_rows()}
        new = [r for r in keep if _key(r) not in present]
        if new:
            tables.write(
                tables.table_path(self.warehouse, tables.ALERTS),
                pa.Table.from_pylist(new, schema=ALERT_SCHEMA),
                replace=(),
            )
        self._pending = []
        self._truncate()

    def _truncate(self) -> None:
        path = self.folder / "journal.jsonl"
        if self._journal is not None:
            self._journal.truncate(0)
            self._journal.seek(0)
            os.fsync(self._journal.fileno())
        elif path.exists() and path.stat().st_size:
            with open(path, "r+") as handle:
                handle.truncate(0)
                os.fsync(handle.fileno())

    # -- history ------------------------------------------------------------------------

    def table_rows(self) -> list[dict[str, Any]]:
        path = tables.table_path(self.warehouse, tables.ALERTS)
        return tables.read(path).to_pylist() if tables.exists(path) else []

    def history(self) -> list[dict[str, Any]]:
        """Every recorded delivery state: the table and this run's journal."""
        return self.table_rows() + list(self._pending)


def previous_alerts(warehouse: str) -> list[dict[str, Any]]:
    """The `alerts` table as rows (without taking the lock: for readers)."""
    path = tables.table_path(warehouse, tables.ALERTS)
    return tables.read(path).to_pylist() if tables.exists(path) else []
