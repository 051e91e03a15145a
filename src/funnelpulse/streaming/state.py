"""The embedded stream's durable state: the keys of events already counted (to drop repeats), the
files already read, and each batch's plan, in one DuckDB file.

Why DuckDB: it is already the engine that judges each batch, so the repeat check is one anti-join
in the same SQL, inserts of 50k keys are a columnar append, a range delete prunes keys older than
the horizon, and a commit is durable (write-ahead log) without another dependency. Every row is
tagged with its batch number, so after a crash the state is rolled back to the batch the live
table committed: rows of later batches are deleted, nothing else is needed. A key is the event
time plus a 64-bit hash of the other key fields: two different events collide only when they share
the same event time (to the microsecond) and their hashes collide (odds ~ n^2 / 2^65 per
microsecond, n events in that instant).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..localdb import file_path

log = logging.getLogger(__name__)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS state.seen (event_time TIMESTAMPTZ, k UBIGINT, batch BIGINT);
CREATE TABLE IF NOT EXISTS state.files (name VARCHAR, batch BIGINT);
CREATE TABLE IF NOT EXISTS state.plans (batch BIGINT, source VARCHAR, plan VARCHAR);
"""
# The hash of an event's key fields other than its time (see the module docstring).
KEY_HASH = "hash(user_id, user_session, product_id, event_type)"


@dataclass
class StateSize:
    keys: int
    file_bytes: int


class StreamState:
    """Dedup keys, files read and batch plans, attached to the engine's DuckDB connection as
    schema `state`; every change is tagged with its batch and rolled back past the last commit."""

    def __init__(self, con: Any, path: str) -> None:
        self.con = con
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A path is data, never SQL text; `?` in it needs a link (localdb.file_path).
        con.execute("ATTACH ? AS state", [file_path(path)]).fetchall()
        con.execute(SCHEMA_SQL).fetchall()

    def rollback(self, committed: int) -> None:
        """Forget everything written for batches after `committed` (the live table's last batch),
        except the plan of the batch that comes next (a retry must read exactly the same input)."""
        con = self.con
        con.execute("BEGIN").fetchall()
        con.execute("DELETE FROM state.seen WHERE batch > ?", [committed]).fetchall()
        con.execute("DELETE FROM state.files WHERE batch > ?", [committed]).fetchall()
        con.execute("DELETE FROM state.plans WHERE batch <> ?", [committed + 1]).fetchall()
        con.execute("COMMIT").fetchall()

    def plan(self, batch: int, source: str) -> dict[str, Any] | None:
        """The recorded input of `batch` for `source`, if it was planned before a crash."""
        row = self.con.execute(
            "SELECT plan FROM state.plans WHERE batch = ? AND source = ?", [batch, source]
        ).fetchall()
        return json.loads(row[0][0]) if row else None

    def save_plan(self, batch: int, source: str, plan: dict[str, Any]) -> None:
        self.con.execute("BEGIN").fetchall()
        self.con.execute("DELETE FROM state.plans WHERE batch = ?", [batch]).fetchall()
        self.con.execute(
            "INSERT INTO state.plans VALUES (?, ?, ?)", [batch, source, json.dumps(plan)]
        ).fetchall()
        self.con.execute("COMMIT").fetchall()

    def files_done(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT name FROM state.files").fetchall()}

    def new_events_sql(self, view: str) -> str:
        """SQL: the rows of `view` (event_time, user_id, ...) whose key is not yet in the state."""
        return f"""
            SELECT v.* FROM {view} AS v
            WHERE NOT EXISTS (
                SELECT 1 FROM state.seen AS s
                WHERE s.event_time = v.event_time
                    AND s.k = hash(v.user_id, v.user_session, v.product_id, v.event_type)
                    AND s.event_time BETWEEN (SELECT min(event_time) FROM {view})
                        AND (SELECT max(event_time) FROM {view})
            )"""

    def record(self, batch: int, view: str, files: list[str]) -> None:
        """Remember the keys of the events in `view` and the files read, as part of `batch`."""
        con = self.con
        con.execute("BEGIN").fetchall()
        con.execute(
            f"INSERT INTO state.seen SELECT event_time, {KEY_HASH}, ? FROM {view}", [batch]
        ).fetchall()
        for name in files:
            con.execute("INSERT INTO state.files VALUES (?, ?)", [name, batch]).fetchall()
        con.execute("COMMIT").fetchall()

    def prune(self, before: datetime) -> int:
        """Drop keys older than `before` (events that old are late and never reach the check)."""
        rows = self.con.execute("DELETE FROM state.seen WHERE event_time < ?", [before]).fetchall()
        return int(rows[0][0]) if rows else 0

    def size(self) -> StateSize:
        keys = self.con.execute("SELECT count(*) FROM state.seen").fetchall()[0][0]
        wal = self.path + ".wal"
        total = os.path.getsize(self.path) + (os.path.getsize(wal) if os.path.exists(wal) else 0)
        return StateSize(int(keys), total)
