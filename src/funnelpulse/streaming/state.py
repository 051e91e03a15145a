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
ALTER TABLE state.files ADD COLUMN IF NOT EXISTS identity VARCHAR;
ALTER TABLE state.files ADD COLUMN IF NOT EXISTS size BIGINT;
ALTER TABLE state.files ADD COLUMN IF NOT EXISTS mtime_ns BIGINT;
ALTER TABLE state.files ADD COLUMN IF NOT EXISTS gone BIGINT;
CREATE TABLE IF NOT EXISTS state.file_events (name VARCHAR, event_time TIMESTAMP, k UBIGINT,
    event_type VARCHAR, brand_norm VARCHAR, price_band VARCHAR, price DOUBLE, batch BIGINT,
    gone BIGINT);
"""
# A file read by the files source: the version taken (content identity, size, mtime in ns).
FileVersion = tuple[str | None, int | None, int | None]
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
        con.execute("DELETE FROM state.file_events WHERE batch > ?", [committed]).fetchall()
        for table in ("files", "file_events"):
            con.execute(
                f"UPDATE state.{table} SET gone = NULL WHERE gone > ?", [committed]
            ).fetchall()
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

    def files_done(self) -> dict[str, FileVersion]:
        """The files read, each with the version taken (older states knew only the name)."""
        rows = self.con.execute(
            "SELECT name, identity, size, mtime_ns FROM state.files WHERE gone IS NULL"
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def take_out(self, batch: int, names: list[str]) -> None:
        """The rows of the files `names` replace, as temp table `removed`, and out of the state:
        their keys forgotten (the new version's events count again), their rows marked gone in
        `batch`. Repeating it for the same batch (a retry) gives the same `removed`."""
        con = self.con
        listed = "SELECT unnest(?::VARCHAR[])"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE removed AS SELECT * FROM state.file_events
            WHERE name IN ({listed}) AND batch < ? AND (gone IS NULL OR gone = ?)""",
            [names, batch, batch],
        ).fetchall()
        con.execute("BEGIN").fetchall()
        con.execute(
            """DELETE FROM state.seen AS s USING removed AS r
            WHERE s.event_time = r.event_time AND s.k = r.k"""
        ).fetchall()
        for table in ("file_events", "files"):
            con.execute(
                f"UPDATE state.{table} SET gone = ? WHERE name IN ({listed}) AND batch < ? "
                "AND gone IS NULL",
                [batch, names, batch],
            ).fetchall()
        con.execute("COMMIT").fetchall()

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

    def record(
        self,
        batch: int,
        view: str,
        files: dict[str, FileVersion] | None = None,
        file_events: str | None = None,
    ) -> None:
        """Remember the keys of the events in `view`, the files read (with their versions) and
        each file's counted events (`file_events`: to take them out if the file is replaced),
        as part of `batch`."""
        con = self.con
        con.execute("BEGIN").fetchall()
        con.execute(
            f"INSERT INTO state.seen SELECT event_time, {KEY_HASH}, ? FROM {view}", [batch]
        ).fetchall()
        for name, (identity, size, mtime_ns) in (files or {}).items():
            con.execute(
                "INSERT INTO state.files (name, batch, identity, size, mtime_ns) "
                "VALUES (?, ?, ?, ?, ?)",
                [name, batch, identity, size, mtime_ns],
            ).fetchall()
        if file_events:
            con.execute(
                f"""INSERT INTO state.file_events SELECT name, event_time, k, event_type,
                brand_norm, price_band, price, ?, NULL FROM {file_events}""",
                [batch],
            ).fetchall()
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
