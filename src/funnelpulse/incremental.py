"""What an incremental build must redo: the dates whose bronze files changed since the last build.

A build records, per event date, a fingerprint of the bronze data files it read (their names:
every commit writes files under new names, so a new file, a replaced or re-ingested file, late
events of an old date and an undone ingest all change a date's fingerprint), plus a hash of the
model definitions. The next build without dates compares the current bronze with that record and
rebuilds exactly the dates that differ (and the dates sharing a session with them), as one set of
dates in one engine pass, one commit per table. The record is written only
after every table of a build has committed, so it never claims more than was built: a build that
dies before it is simply redone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from . import tables

STATE_FILE = "build_state.json"
FORMAT = 1


@dataclass(frozen=True)
class Plan:
    """What a build without dates does: everything (`full`), nothing, or the dates of these runs
    (one set, built together)."""

    full: bool
    runs: list[tuple[date, date]]
    reason: str

    @property
    def empty(self) -> bool:
        return not self.full and not self.runs


def state_location(warehouse: str) -> str:
    return f"{warehouse.rstrip('/')}/_funnelpulse/{STATE_FILE}"


def models_hash() -> str:
    """A hash of every model's SQL: a changed model means every date must be rebuilt."""
    from .engines.base import MODELS
    from .funnel import GOLD_FUNNELS, gold_sql

    text = "\n".join(m.sql for m in MODELS)
    text += "\n".join(gold_sql(by, None, None) for by in GOLD_FUNNELS.values())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bronze_fingerprints(warehouse: str) -> dict[str, str]:
    """Per event date (ISO), a hash of the names of the bronze files that hold it."""
    return date_fingerprints(warehouse, tables.BRONZE)


def date_fingerprints(warehouse: str, name: str, column: str = "event_date") -> dict[str, str]:
    """Per date (ISO) of partition `column`, a hash of the names of table `name`'s files that
    hold it."""
    path = tables.table_path(warehouse, name)
    if not tables.is_delta(path):
        return {}
    files: dict[str, list[str]] = {}
    dataset = tables.dataset(path)
    import pyarrow.dataset as ds

    for fragment in dataset.get_fragments():
        day = ds.get_partition_keys(fragment.partition_expression).get(column)
        key = day.isoformat() if isinstance(day, date) else str(day)
        files.setdefault(key, []).append(os.path.basename(fragment.path))
    return {
        day: hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]
        for day, names in files.items()
    }


def read_state(warehouse: str) -> dict[str, Any] | None:
    location = state_location(warehouse)
    try:
        if "://" in location:
            from pyarrow import fs

            filesystem, inner = fs.FileSystem.from_uri(location)
            with filesystem.open_input_stream(inner) as handle:
                record = json.loads(handle.read())
        else:
            with open(location, "rb") as handle:
                record = json.loads(handle.read())
    except (FileNotFoundError, OSError, ValueError):
        return None  # no record (or an unreadable one): the next build is a full one
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    return record


def new_state(
    old: dict[str, Any] | None, built: set[str] | None, fingerprints: dict[str, str], models: str
) -> dict[str, Any]:
    """The record after building `built` dates (None: all of them) at the fingerprints read
    before building; the dates not built keep what the old record says of them."""
    dates: dict[str, str] = {}
    if built is not None and old is not None and old.get("models") == models:
        dates = dict(old.get("dates", {}))
    for day in set(fingerprints) if built is None else built:
        if day in fingerprints:
            dates[day] = fingerprints[day]
        else:
            dates.pop(day, None)  # a date bronze no longer has: built as empty
    return {"format": FORMAT, "models": models, "dates": dict(sorted(dates.items()))}


def _built_tables_present(warehouse: str) -> bool:
    from .engines.base import MODELS
    from .funnel import GOLD_FUNNELS

    names = [m.name for m in MODELS] + list(GOLD_FUNNELS)
    return all(tables.is_delta(tables.table_path(warehouse, name)) for name in names)


def runs_of(days: list[date], join_gap: int) -> list[tuple[date, date]]:
    """Neighbouring dates as (first, last) runs; runs closer than `join_gap` days are merged, since
    their session-funnel padding would overlap anyway."""
    runs: list[tuple[date, date]] = []
    for day in sorted(days):
        if runs and (day - runs[-1][1]).days <= join_gap:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def plan(warehouse: str, fingerprints: dict[str, str], models: str) -> Plan:
    """Compare bronze now with what the last build read."""
    state = read_state(warehouse)
    if state is None:
        return Plan(True, [], "no record of an earlier build")
    if state.get("models") != models:
        return Plan(True, [], "the model definitions changed")
    if not _built_tables_present(warehouse):
        return Plan(True, [], "a built table is missing")
    recorded: dict[str, str] = state.get("dates", {})
    changed = [
        date.fromisoformat(day)
        for day in set(fingerprints) | set(recorded)
        if fingerprints.get(day) != recorded.get(day)
    ]
    if changed:
        changed = sorted(set(changed) | session_view_dates(warehouse, changed))
    # Exactly these dates, in one engine pass with one commit per table (a predicate on the set
    # of dates): a reader sees the tables before the build or after it, never a part of it, and
    # the dates between two changed ones are left alone. Runs here only shorten the journal.
    return Plan(False, runs_of(changed, 1), f"{len(changed)} date(s) changed")


def session_view_dates(warehouse: str, changed: list[date]) -> set[date]:
    """The dates with a view of any session that has an event on a changed date.

    A session funnel row is keyed by the entry date (a session's first view): a late view can
    move a session's entry to an earlier date, and so take it out of the row of a date far from
    the changed ones. Every entry date such a session had before the build is one of its view
    dates, so rebuilding those too keeps the session funnels exact, however long a session.
    """
    from .localdb import connect

    silver = tables.table_path(warehouse, tables.SILVER)
    bronze = tables.table_path(warehouse, tables.BRONZE)
    if not tables.is_delta(silver) or not tables.is_delta(bronze):
        return set()
    listed = ", ".join(f"DATE '{d.isoformat()}'" for d in changed)
    con = connect()
    try:
        con.register("silver", tables.dataset(silver))
        con.register("bronze", tables.dataset(bronze))
        found = con.execute(
            f"""
            WITH touched AS (
                SELECT DISTINCT user_session FROM silver
                WHERE event_date IN ({listed}) AND user_session IS NOT NULL
                UNION
                SELECT DISTINCT user_session FROM bronze
                WHERE event_date IN ({listed}) AND user_session IS NOT NULL
            )
            SELECT DISTINCT s.event_date FROM silver s SEMI JOIN touched t USING (user_session)
            WHERE s.event_type = 'view'
            """
        ).fetchall()
    finally:
        con.close()
    return {row[0] for row in found}


def describe(runs: list[tuple[date, date]]) -> str:
    parts = [f"{a}" if a == b else f"{a}..{b}" for a, b in runs]
    days = sum((b - a).days + 1 for a, b in runs)
    return f"{days} date(s): {', '.join(parts)}"


def covered(runs: list[tuple[date, date]]) -> set[str]:
    return {(a + timedelta(d)).isoformat() for a, b in runs for d in range((b - a).days + 1)}
