"""`funnelpulse stream --repair`: start the live tables over, so the stream rebuilds them exactly
from its source when a data file of theirs is gone (deleted by hand, by a tool that does not know
the stream, or lost with a disk).

The live tables are a function of the events the stream read: the hourly table, the buckets and
the live incidents are deleted with the stream's dedup state and its quarantine rows, and the run
that follows reads the source from its beginning (a Kafka topic from its first offset, a folder's
files all again), counting each event once. The `alerts` table and its journal stay: incidents
keep their ids, so nothing is alerted twice. What the source no longer holds (a topic past its
retention, files removed) cannot come back; the batch tables are not touched.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from urllib.parse import unquote

from .. import running, tables
from ..errors import FunnelPulseError

log = logging.getLogger(__name__)

LIVE_TABLES = (tables.GOLD_STREAM, tables.GOLD_STREAM_BUCKETS, tables.LIVE_INCIDENTS)
STREAM_QUARANTINE = "ingest_id LIKE 'stream-batch-%'"


def start_over(warehouse: str, checkpoint_dir: str, quarantine_app_id: str) -> list[str]:
    """Delete the live tables, the stream's state and its quarantine rows; returns what went."""
    if "://" in warehouse:
        raise FunnelPulseError(
            "--repair works on a local warehouse. Delete the live tables and the checkpoint "
            "folder by hand to start the stream over"
        )
    others = running.running(warehouse, "stream")
    if others:
        raise FunnelPulseError(
            f"A stream (pid {others[0].pid}) is running on this warehouse. Stop it, then run "
            "`funnelpulse stream --repair` again"
        )
    removed = []
    for name in LIVE_TABLES:
        path = Path(tables.table_path(warehouse, name))
        if path.exists():
            shutil.rmtree(path)
            removed.append(name)
    state = Path(checkpoint_dir)
    if state.exists():
        shutil.rmtree(state)
        removed.append("the stream's checkpoint")
    quarantine = tables.table_path(warehouse, tables.QUARANTINE)
    if tables.is_delta(quarantine):
        from deltalake import CommitProperties, DeltaTable, Transaction

        # -1: the stream's batches are numbered from 1 again, so each writes its bad rows again
        DeltaTable(quarantine).delete(
            STREAM_QUARANTINE,
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=quarantine_app_id, version=-1)]
            ),
        )
        removed.append("the stream's quarantine rows")
    log.info("repair: removed %s; the stream starts over from its source", ", ".join(removed))
    return removed


def check_live_tables(warehouse: str, source: str) -> None:
    """Refuse to start on live tables whose newest version names a data file that is gone."""
    if "://" in warehouse:
        return
    from deltalake import DeltaTable

    for name in (tables.GOLD_STREAM, tables.GOLD_STREAM_BUCKETS):
        path = tables.table_path(warehouse, name)
        if not tables.is_delta(path):
            continue
        for uri in DeltaTable(path).file_uris():
            local = unquote(uri.removeprefix("file://"))
            if not Path(local).exists():
                raise _advice(f"{name} ({Path(local).name})", source)


def missing_file_error(exc: BaseException, source: str) -> FunnelPulseError | None:
    """The error a user can act on when a live table names a data file that is gone."""
    text = str(exc)
    if ".parquet" not in text or not any(
        w in text.lower() for w in ("not found", "no such file", "does not exist")
    ):
        return None
    return _advice(next((t for t in LIVE_TABLES if t in text), "a live table"), source)


def _advice(what: str, source: str) -> FunnelPulseError:
    return FunnelPulseError(
        f"A data file of {what} is missing, so the live tables cannot be updated. Run "
        f"`funnelpulse stream --source {source} --repair` to rebuild them from the source "
        "(or delete the live tables and run the stream again)"
    )
