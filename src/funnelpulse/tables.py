"""Warehouse tables: Delta (or plain partitioned Parquet written by a jar-less Spark), read and written by path."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from . import contract
from .errors import WarehouseError

# Tables a full `funnelpulse build` rewrites from bronze_events (engines/base.py MODELS, and the
# session funnels): a damaged one is rebuilt by that command.
BUILT_TABLES = (
    "silver_events",
    "gold_funnel_hourly_brand",
    "gold_funnel_daily_brand",
    "gold_funnel_daily_category",
    "gold_funnel_hourly_price_band",
    "gold_session_funnel_daily",
    "gold_session_funnel_daily_brand",
    "gold_session_funnel_daily_category",
    "gold_session_funnel_daily_price_band",
)

BRONZE = "bronze_events"
QUARANTINE = "quarantine_events"
SILVER = "silver_events"
GOLD_HOURLY_BRAND = "gold_funnel_hourly_brand"
GOLD_DAILY_BRAND = "gold_funnel_daily_brand"
GOLD_DAILY_CATEGORY = "gold_funnel_daily_category"
GOLD_HOURLY_PRICE_BAND = "gold_funnel_hourly_price_band"
GOLD_STREAM = "gold_stream_funnel_hourly_brand"
GOLD_STREAM_BUCKETS = "gold_stream_funnel_buckets"  # live buckets (streaming/buckets.py)
LIVE_INCIDENTS = (
    "live_incidents"  # open-window incidents of the last day (anomaly/live_incidents.py)
)
ANOMALIES = "anomalies"
ALERTS = "alerts"
INCIDENT_ACTIONS = "incident_actions"  # ack, resolve, mute, unmute (anomaly/workflow.py)
INCIDENTS = "incidents"  # lasting incidents, batch and live (anomaly/incident_store.py)
ANNOTATIONS = "annotations"  # known events (anomaly/annotations.py)
# Ordered session funnels per entry date (funnel.py), whole shop and per held-constant segment.
GOLD_SESSION_FUNNEL = "gold_session_funnel_daily"
GOLD_SESSION_FUNNELS = (
    GOLD_SESSION_FUNNEL,
    f"{GOLD_SESSION_FUNNEL}_brand",
    f"{GOLD_SESSION_FUNNEL}_category",
    f"{GOLD_SESSION_FUNNEL}_price_band",
)

ALL_TABLES = (
    BRONZE,
    QUARANTINE,
    SILVER,
    GOLD_HOURLY_BRAND,
    GOLD_DAILY_BRAND,
    GOLD_DAILY_CATEGORY,
    GOLD_HOURLY_PRICE_BAND,
    *GOLD_SESSION_FUNNELS,
    GOLD_STREAM,
    GOLD_STREAM_BUCKETS,
    ANOMALIES,
    LIVE_INCIDENTS,
    ALERTS,
    INCIDENT_ACTIONS,
    INCIDENTS,
    ANNOTATIONS,
)
# table name -> its schema in the contract, for every table written from Arrow.
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    BRONZE: contract.BRONZE_SCHEMA,
    QUARANTINE: contract.QUARANTINE_SCHEMA,
    GOLD_STREAM: contract.STREAM_SCHEMA,
    GOLD_STREAM_BUCKETS: contract.BUCKET_SCHEMA,
    ANOMALIES: contract.ANOMALY_SCHEMA,
    LIVE_INCIDENTS: contract.INCIDENT_SCHEMA,
    ALERTS: contract.ALERT_SCHEMA,
    INCIDENTS: contract.INCIDENTS_SCHEMA,
    ANNOTATIONS: contract.ANNOTATION_SCHEMA,
}


def table_path(warehouse: str, name: str) -> str:
    return f"{warehouse.rstrip('/')}/{name}"


def delta_location(path: str) -> str:
    """How to name a table to the table library; a local path with a `%` is refused.

    The library reads a local path as a URL: it decodes `%41` to `A` on some operations and not
    on others (it wrote to `wh%41{x}`, then read `whA{x}`), whether the path is given plain,
    encoded, or through a link (it resolves links). Refusing is the only way not to split one
    table over two folders.
    """
    local = _local(path)
    if local is not None and "%" in local:
        raise WarehouseError(
            f"The path {path} contains '%', which the table storage cannot use reliably (it may "
            "read '%41' as 'A'). Give a --warehouse folder whose path has no '%'"
        )
    return path


REACH_TIMEOUT_S = 10.0  # an object store that has not answered by then is not coming


def check_reachable(warehouse: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Refuse, within `timeout_s`, an object-store warehouse that cannot be reached (no
    credentials, no network, no such bucket): its client would otherwise retry for minutes."""
    if _local(warehouse) is not None:
        return
    import threading
    from datetime import timedelta

    from pyarrow import fs

    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            if warehouse.startswith("gs://"):
                store: Any = fs.GcsFileSystem(retry_time_limit=timedelta(seconds=timeout_s))
                inner = warehouse[len("gs://") :]
            else:
                store, inner = fs.FileSystem.from_uri(warehouse)
            store.get_file_info(inner.rstrip("/"))
            outcome.append(None)
        except BaseException as exc:  # reported by the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=probe, name="funnelpulse-reach", daemon=True)
    worker.start()
    worker.join(timeout_s + 2)
    if outcome and outcome[0] is None:
        return
    if not outcome:
        reason = f"no answer within {timeout_s + 2:.0f} s"
    else:
        text = str(outcome[0])
        reason = text.split("last message of ", 1)[-1].split(". ")[0].rstrip(".")[:200]
    raise WarehouseError(
        f"Cannot reach the warehouse at {warehouse} ({reason}). Check the address, the network "
        "and the credentials (for gs://: GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth "
        "application-default login`), then re-run"
    )


def _local(path: str) -> str | None:
    """The local folder of a table path (file:// included); None for an object store."""
    if path.startswith("file://"):
        return path[len("file://") :]
    return None if "://" in path else path


# Set by a journaled step (warehouse.journal): its data files carry the tag in their names, so
# the files a killed write left uncommitted can be found and deleted.
FILE_TAG: contextvars.ContextVar[str] = contextvars.ContextVar("funnelpulse_file_tag", default="")

_COMMIT_FILE = re.compile(r"^\d{20}\.json$|\.checkpoint(\.\d+\.\d+)?\.parquet$|^_last_checkpoint$")


def is_delta(path: str) -> bool:
    """True when the table has at least one commit (a log folder without one is no table)."""
    if "://" in path:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(delta_location(path))
    try:
        with os.scandir(Path(path, "_delta_log")) as entries:
            return any(_COMMIT_FILE.search(e.name) and e.stat().st_size > 0 for e in entries)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _has_log_folder(path: str) -> bool:
    return "://" not in path and Path(path, "_delta_log").is_dir()


def exists(path: str) -> bool:
    if is_delta(path):
        return True
    if "://" in path or _has_log_folder(path):  # a log without commits: debris of a failed create
        return False
    return Path(path).is_dir() and any(Path(path).rglob("*.parquet"))


def dataset(path: str, name: str | None = None) -> ds.Dataset:
    """Open a table as an Arrow dataset, whether Delta or hive-partitioned Parquet."""
    if is_delta(path):
        return _delta_dataset(path)
    if exists(path):
        return ds.dataset(path, format="parquet", partitioning=_parquet_partitioning(path))
    label = name or os.path.basename(path)
    raise WarehouseError(f"Table {label} not found at {path}. Run `funnelpulse build` first")


def _parquet_partitioning(path: str) -> ds.Partitioning | str:
    """Hive partitioning for a plain Parquet table; `col=YYYY-MM-DD` folders are typed as dates."""
    import re

    folders = [p.name for p in Path(path).iterdir() if p.is_dir() and "=" in p.name]
    match = re.fullmatch(r"(\w+)=\d{4}-\d{2}-\d{2}", folders[0]) if folders else None
    if match:
        return ds.partitioning(pa.schema([(match.group(1), pa.date32())]), flavor="hive")
    return "hive"


def _delta_dataset(path: str) -> ds.Dataset:
    """The table's current files as a plain Arrow dataset (native readers, partition types kept).

    deltalake's own dataset wrapper left a Rust thread that aborted the interpreter at exit,
    and the project writes no deletion vectors, so the file list is the whole truth.
    """
    return _files_dataset(path, _open(path))


def pinned(path: str, at: int | None = None) -> tuple[ds.Dataset, int | None]:
    """The table as an Arrow dataset and the version it is at (None: plain Parquet, unversioned).

    Both come from one opening of the log, so the rows are exactly those of that version: a
    write committed meanwhile is not half seen. `at` pins an older version still on disk.
    """
    if not is_delta(path):
        return dataset(path), None
    from deltalake.exceptions import DeltaError

    if at is None:
        table = _open(path)
    else:
        from deltalake import DeltaTable

        check_log(path)  # a damaged newest commit is an error, never an older or empty table
        try:
            table = DeltaTable(delta_location(path), version=at)
        except (DeltaError, OSError):
            table = _open(path)
    return _files_dataset(path, table), int(table.version())


def latest_version(path: str) -> int | None:
    """The newest committed version of a local Delta table from its log's file names (no parse);
    None when that cannot be told cheaply (object stores, checkpoint-only logs)."""
    if "://" in path:
        return None
    newest = -1
    try:
        with os.scandir(Path(path, "_delta_log")) as entries:
            for entry in entries:
                name = entry.name
                if len(name) == 25 and name.endswith(".json") and name[:20].isdigit():
                    newest = max(newest, int(name[:20]))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return newest if newest >= 0 else None


def _files_dataset(path: str, table: Any) -> ds.Dataset:
    schema = pa.schema(table.schema().to_arrow())
    parts = table.metadata().partition_columns
    partitioning = (
        ds.partitioning(pa.schema([schema.field(c) for c in parts]), flavor="hive")
        if parts
        else None
    )
    local = _local(path)
    if local is None:
        files = table.file_uris()
    else:  # the table's own URIs percent-encode the folder (`wh space` -> `wh%20space`)
        root = os.path.abspath(local)
        relatives = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
        files = [os.path.join(root, r) for r in relatives]
    return ds.dataset(
        files,
        schema=schema,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=(os.path.abspath(local) if local is not None else path)
        if parts
        else None,
    )


def read(path: str, filter: ds.Expression | None = None) -> pa.Table:
    return dataset(path).to_table(filter=filter)


@dataclass(frozen=True)
class Partitions:
    """Replace the given values of the table's partition column."""

    column: str
    values: frozenset[str]


@dataclass(frozen=True)
class SameValue:
    """Replace the files in which `column` holds only `value` (e.g. rows from one source file)."""

    column: str
    value: str


Replace = Partitions | SameValue | tuple[Partitions | SameValue, ...] | None


def write(
    path: str,
    data: pa.Table | pa.RecordBatchReader,
    *,
    partition_by: Sequence[str] = (),
    replace: Replace = None,
) -> int:
    """Write `data` and drop the files it replaces (all of them when `replace` is None) in one commit.

    Files are written (Snappy, readable by every Parquet reader incl. Spark executors) by Arrow's
    multithreaded dataset writer, then committed with deltalake's
    transaction API; this is measurably faster than deltalake's own writer on 2 cores.
    Returns the number of rows written.
    """
    if "://" not in path:
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WarehouseError(f"Could not create table {path}: {exc}") from exc
    return commit(
        path, data.schema, lambda: _write_files(path, data, partition_by), partition_by, replace
    )


def commit(
    path: str,
    schema: pa.Schema,
    write_files: Callable[[], list[Any]],
    partition_by: Sequence[str] = (),
    replace: Replace = None,
) -> int:
    """Create the table if needed, call `write_files` for the new files' AddActions, and commit
    them with the removal of the files they replace, as one Delta transaction. Returns rows added.

    Any writer can produce the files (Arrow here, Spark executors in the Spark engine): only this
    commit, on the driver, touches the log, so Delta needs no jars on the Spark side. It runs
    under the warehouse's writer lock, so two processes never compute their replacements from the
    same old state (which duplicated rows). Files of a failed commit are deleted.
    """
    from .locks import writer_lock

    with writer_lock(_warehouse_of(path)):
        return _commit(path, schema, write_files, partition_by, replace)


def _warehouse_of(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else "."


def _commit(
    path: str,
    schema: pa.Schema,
    write_files: Callable[[], list[Any]],
    partition_by: Sequence[str],
    replace: Replace,
) -> int:
    from deltalake import DeltaTable
    from deltalake.transaction import RemoveAction

    from . import faults

    adds: list[Any] = []
    try:
        if replace is None and damaged_commit(path) is not None:
            set_aside(path)  # a full rewrite needs nothing of the damaged change
        if not is_delta(path):
            _clear_debris(path)
            DeltaTable.create(delta_location(path), schema, partition_by=list(partition_by) or None)
        table = _open(path)
        now_ms = int(time.time() * 1000)
        removes = [
            RemoveAction(
                path=row["path"],
                data_change=True,
                deletion_timestamp=now_ms,
                size=row["size_bytes"],
                partition_values={
                    c: _partition_text(row.get(f"partition.{c}")) for c in partition_by
                },
            )
            for row in _replaced_files(table, replace)
        ]
        adds = write_files()
        faults.checkpoint("commit.files_written")
        table.create_write_transaction(
            [*adds, *removes], mode="append", schema=schema, partition_by=list(partition_by) or None
        )
    except Exception as exc:
        _delete_uncommitted(path, [a.path for a in adds])
        raise user_error(path, exc) from exc
    return sum(json.loads(a.stats)["numRecords"] for a in adds)


def no_space(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) is a full disk."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(seen) or "errno 28]" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def storage_error(where: str, exc: BaseException) -> Exception:
    """The user's version of a failed write: a full disk says so (never a library's words)."""
    from .errors import FunnelPulseError

    if isinstance(exc, FunnelPulseError):
        return exc
    if no_space(exc):
        return WarehouseError(
            f"No space left on the disk holding {where}. Free some space (`funnelpulse vacuum` "
            "removes old table versions) and re-run the same command"
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return WarehouseError(
        f"Could not write {where}: {reason}. Check the path, its permissions and free disk space"
    )


def user_error(path: str, exc: Exception) -> Exception:
    """Map an error of a table write to one a user can act on; others pass through unchanged."""
    from deltalake.exceptions import CommitFailedError, DeltaError

    name = os.path.basename(path.rstrip("/"))
    if isinstance(exc, OSError) or no_space(exc):
        return storage_error(f"table {name} ({path})", exc)
    if isinstance(exc, CommitFailedError):
        return WarehouseError(
            f"Another process changed table {name} at the same moment, so this change was not "
            "saved. Re-run the command"
        )
    if isinstance(exc, DeltaError):
        return WarehouseError(
            f"Could not write table {name} at {path}: its log refused the change. Re-run the "
            "command; if it fails again, re-run it with --debug and report the message"
        )
    return exc


def open_table(path: str) -> Any:
    """The Delta table at `path` (its log checked), with a user's error when it cannot be opened."""
    return _open(path)


def _open(path: str) -> Any:
    """The Delta table at `path`, with a user's error when it cannot be opened."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    check_log(path)
    try:
        return DeltaTable(delta_location(path))
    except (DeltaError, OSError) as exc:
        name = os.path.basename(path.rstrip("/"))
        raise WarehouseError(
            f"Table {name} at {path} cannot be read (it is missing or incomplete). Re-run the "
            "step that writes it (`funnelpulse ingest` for bronze_events and quarantine_events, "
            "`funnelpulse build` for the others)"
        ) from exc


# ---------------------------------------------------------------------------------------------
# A damaged log: its newest commit file is empty or cut short (a disk or copy that failed half
# way). The table format reads an empty newest commit as "no files", an empty table; here it is
# an error that says what to do. Object stores write an object whole or not at all, so only
# local tables are checked.


class DamagedTableError(WarehouseError):
    """A table's newest commit does not parse; the message says how to get past it."""


def _newest_commit(path: str) -> Path | None:
    local = _local(path)
    if local is None:
        return None
    try:
        with os.scandir(Path(local, "_delta_log")) as entries:
            names = [e.name for e in entries if re.fullmatch(r"\d{20}\.json", e.name)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Path(local, "_delta_log", max(names)) if names else None


def _parses(commit: Path) -> bool:
    """True when every line of the commit file is a JSON action (an empty file is not)."""
    try:
        text = commit.read_bytes()
    except FileNotFoundError:
        return True  # replaced by a concurrent writer's rename: nothing damaged
    lines = [line for line in text.split(b"\n") if line.strip()]
    if not lines:
        return False
    try:
        return all(isinstance(json.loads(line), dict) for line in lines)
    except ValueError:
        return False


def damaged_commit(path: str) -> Path | None:
    """The table's newest commit file when it does not parse (else None)."""
    newest = _newest_commit(path)
    return newest if newest is not None and not _parses(newest) else None


def check_log(path: str) -> None:
    """Refuse a table whose newest commit does not parse, naming it and a step that works."""
    commit = damaged_commit(path)
    if commit is None:
        return
    import shlex

    name = os.path.basename(path.rstrip("/"))
    what = (
        f"Table {name} is damaged: its newest change ({commit}) is empty or cut short, so the "
        "table cannot be read as it is"
    )
    if name in BUILT_TABLES:
        raise DamagedTableError(f"{what}. Run `funnelpulse build` to rebuild it from bronze_events")
    if name == "anomalies":
        raise DamagedTableError(f"{what}. Run `funnelpulse detect` to write it again")
    aside = f"{commit}.damaged"
    steps = (
        f"Set that change aside with `mv {shlex.quote(str(commit))} {shlex.quote(aside)}` (the "
        "table then reads as it was before it)"
    )
    if name in (BRONZE, QUARANTINE):
        sources = _sources_of_uncommitted(path, commit)
        again = (
            f"`funnelpulse ingest {' '.join(shlex.quote(s) for s in sources)}`"
            if sources
            else "`funnelpulse ingest` for the files loaded last"
        )
        steps += f", then run {again} to load what that change held"
    raise DamagedTableError(f"{what}. {steps}")


def _sources_of_uncommitted(path: str, damaged: Path) -> list[str]:
    """The raw files whose rows only the damaged commit named (read from its data files)."""
    local = _local(path)
    if local is None:
        return []
    logged = "".join(
        p.read_text(errors="replace") for p in damaged.parent.glob("*.json") if p != damaged
    )
    sources: set[str] = set()
    for file in Path(local).rglob("*.parquet"):
        if file.name in logged:
            continue
        with contextlib.suppress(Exception):
            column = pq.read_table(file, columns=["source_file"]).column("source_file")
            sources.update(s for s in column.unique().to_pylist() if s)
    return sorted(sources)


def set_aside(path: str) -> Path | None:
    """Rename a damaged newest commit to `*.damaged` (kept for inspection): the table then reads
    as the version before it. Returns the new name (None when nothing was damaged)."""
    commit = damaged_commit(path)
    if commit is None:
        return None
    aside = commit.with_name(f"{commit.name}.{int(time.time())}.damaged")
    os.replace(commit, aside)
    import warnings

    warnings.warn(
        f"table {os.path.basename(path.rstrip('/'))} had a damaged newest change; it was set "
        f"aside as {aside} and the table is written again in full",
        stacklevel=2,
    )
    return aside


# ---------------------------------------------------------------------------------------------
# Lost or corrupted data files: found after a read failed, so that the user is told which table
# and what to run rather than an unexpected error.


def broken_files(path: str) -> list[tuple[str, str | None]]:
    """Data files the table's log lists that are gone, cut short or unreadable on disk, each
    with the raw file whose rows it held when its statistics say (bronze, quarantine)."""
    local = _local(path)
    if local is None or not is_delta(path):
        return []
    table = _open(path)
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    root = os.path.abspath(local)
    found = []
    for action in actions:
        file = os.path.join(root, action["path"])
        try:
            ok = os.path.getsize(file) == action["size_bytes"]
            if ok:
                pq.read_metadata(file)
        except (OSError, pa.ArrowException):
            ok = False
        if not ok:
            low, high = action.get("min.source_file"), action.get("max.source_file")
            found.append((action["path"], low if low is not None and low == high else None))
    return found


def broken_files_error(warehouse: str) -> WarehouseError | None:
    """The user's error for the first table with lost or corrupted data files (None: none)."""
    import shlex

    for name in ALL_TABLES:
        try:
            broken = broken_files(table_path(warehouse, name))
        except WarehouseError:
            continue
        if not broken:
            continue
        shown = ", ".join(f for f, _ in broken[:3]) + (" ..." if len(broken) > 3 else "")
        what = (
            f"Table {name} has {len(broken)} data file(s) missing or corrupted on disk ({shown}), "
            "so it cannot be read"
        )
        if name in BUILT_TABLES:
            return WarehouseError(
                f"{what}. Run `funnelpulse build --full` to write it again from bronze_events"
            )
        if name == ANOMALIES:
            return WarehouseError(f"{what}. Run `funnelpulse detect` to write it again")
        sources = sorted({s for _, s in broken if s})
        if name in (BRONZE, QUARANTINE) and sources and all(s for _, s in broken):
            listed = " ".join(shlex.quote(s) for s in sources)
            return WarehouseError(
                f"{what}. Run `funnelpulse ingest {listed}` to load those rows again"
            )
        return WarehouseError(
            f"{what}. Restore the files from a backup, or re-run the command that writes {name}"
        )
    return None


def _clear_debris(path: str) -> None:
    """Remove what a failed first commit left (a log folder without a commit, data files):
    with no commit there never was a table, so nothing here is anyone's data."""
    if not _has_log_folder(path):
        return
    import shutil

    shutil.rmtree(Path(path, "_delta_log"), ignore_errors=True)
    for file in Path(path).rglob("*.parquet"):
        file.unlink(missing_ok=True)
    _remove_empty_folders(path)


def _remove_empty_folders(path: str) -> None:
    if "://" in path:
        return
    for folder in sorted(Path(path).rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and folder.name != "_delta_log":
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty


def _filesystem(path: str) -> tuple[Any, str]:
    from pyarrow import fs

    if "://" in path:
        return fs.FileSystem.from_uri(path)
    return fs.LocalFileSystem(), os.path.abspath(path)


def _delete_matching(
    path: str, keep: Callable[[str], bool], pick: Callable[[str], bool]
) -> list[str]:
    """Delete the data files under `path` whose name `pick`s and that `keep` does not hold."""
    from pyarrow import fs

    filesystem, root = _filesystem(path)
    try:
        found = filesystem.get_file_info(
            fs.FileSelector(root, recursive=True, allow_not_found=True)
        )
    except OSError:
        return []
    deleted = []
    for info in found:
        if info.type != fs.FileType.File or "_delta_log" in info.path:
            continue
        relative = info.path[len(root.rstrip("/")) + 1 :]
        if pick(info.base_name) and not keep(relative):
            with contextlib.suppress(OSError):
                filesystem.delete_file(info.path)
                deleted.append(relative)
    if deleted:
        _remove_empty_folders(path)
    return deleted


def _logged_names(path: str) -> str | None:
    """The text of every commit in the table's log (file names of all versions are in it);
    None for an object-store table, whose log is not read here (nothing is deleted there)."""
    if "://" in path:
        return None
    if not Path(path, "_delta_log").is_dir():
        return ""
    return "".join(p.read_text(errors="replace") for p in Path(path, "_delta_log").glob("*.json"))


def _delete_uncommitted(path: str, relatives: list[str]) -> None:
    """After a failed commit: delete its files, unless the commit did land after all."""
    if not relatives:
        return
    names = {unquote(r).rsplit("/", 1)[-1] for r in relatives}
    try:
        logged = _logged_names(path)
    except OSError:
        return
    if logged is None:
        return
    _delete_matching(path, lambda rel: rel.rsplit("/", 1)[-1] in logged, lambda n: n in names)


def drop_uncommitted(path: str, tag: str) -> list[str]:
    """Delete the data files of the journaled step `tag` that no commit of the table mentions.

    Call with the writer lock held: then no other write is in flight.
    """
    if "://" not in path and not Path(path).is_dir():
        return []
    logged = _logged_names(path)
    if logged is None:
        return []
    return _delete_matching(
        path, lambda rel: rel.rsplit("/", 1)[-1] in logged, lambda n: f"-{tag}-" in n
    )


def restore(path: str, version: int | None) -> None:
    """Put a table back to `version` (None: back to no rows) with a new commit."""
    if version is None:
        table = _open(path)
        commit(path, pa.schema(table.schema().to_arrow()), list, table.metadata().partition_columns)
        return
    from deltalake.exceptions import DeltaError

    try:
        _open(path).restore(version)
    except (DeltaError, OSError) as exc:
        raise user_error(path, exc) from exc


def file_size(path: str, relative: str) -> int:
    """Bytes of one file of the table (0 when it is gone)."""
    filesystem, root = _filesystem(path)
    info = filesystem.get_file_info(f"{root.rstrip('/')}/{unquote(relative)}")
    return int(info.size or 0)


def vacuum(path: str, retain_hours: float | None, dry_run: bool) -> list[str]:
    """Delete (or, dry, list) files of versions older than `retain_hours` (None: the table's own
    retention) and files no commit made."""
    from deltalake.exceptions import DeltaError

    try:
        return list(
            _open(path).vacuum(
                retention_hours=None if retain_hours is None else int(retain_hours),
                dry_run=dry_run,
                enforce_retention_duration=False,
                full=True,
            )
        )
    except (DeltaError, OSError) as exc:
        raise user_error(path, exc) from exc


def delete_files(path: str, relatives: list[str]) -> None:
    """Delete files of the table at `path` given relative to it (gone already is fine)."""
    filesystem, root = _filesystem(path)
    for relative in relatives:
        try:
            filesystem.delete_file(f"{root.rstrip('/')}/{unquote(relative)}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise user_error(path, exc) from exc


def _partition_text(value: object) -> str | None:
    return None if value is None else str(value)


def _replaced_files(table: Any, replace: Replace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    if replace is None:
        return rows
    specs = replace if isinstance(replace, tuple) else (replace,)

    def replaced(row: dict[str, Any]) -> bool:
        for spec in specs:
            if isinstance(spec, Partitions):
                if _partition_text(row.get(f"partition.{spec.column}")) in spec.values:
                    return True
            elif row.get(f"min.{spec.column}") == spec.value == row.get(f"max.{spec.column}"):
                return True
        return False

    return [row for row in rows if replaced(row)]


def _write_files(
    path: str, data: pa.Table | pa.RecordBatchReader, partition_by: Sequence[str]
) -> list[Any]:
    written: list[tuple[str, int, pq.FileMetaData]] = []

    def visit(file: Any) -> None:
        written.append((file.path, file.size, file.metadata))

    partitioning = (
        ds.partitioning(pa.schema([data.schema.field(c) for c in partition_by]), flavor="hive")
        if partition_by
        else None
    )
    tag = FILE_TAG.get()
    unique = uuid.uuid4().hex
    try:
        ds.write_dataset(
            data,
            path,
            format="parquet",
            partitioning=partitioning,
            basename_template=f"part-{tag + '-' if tag else ''}{unique}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            file_options=ds.ParquetFileFormat().make_write_options(compression="snappy"),
            max_rows_per_group=1 << 20,
            file_visitor=visit,
        )
    except BaseException:
        # Nothing refers to these files yet: a failed write leaves no data behind.
        _delete_matching(path, lambda rel: False, lambda n: unique in n)
        raise
    root = path.rstrip("/") + "/"
    return [
        add_action(f[len(root) :] if f.startswith(root) else f, size, meta, partition_by)
        for f, size, meta in written
    ]


def add_action(relative: str, size: int, meta: pq.FileMetaData, partition_by: Sequence[str]) -> Any:
    """The Delta AddAction of one Parquet file at `relative` (hive folders give partition values)."""
    from deltalake.transaction import AddAction

    values = dict(unquote(part).split("=", 1) for part in relative.split("/")[:-1] if "=" in part)
    return AddAction(
        path=relative,
        size=size,
        partition_values={c: _hive_value(values.get(c)) for c in partition_by},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(_stats(meta)),
    )


def _hive_value(value: str | None) -> str | None:
    return None if value == "__HIVE_DEFAULT_PARTITION__" else value


def _stats(meta: pq.FileMetaData) -> dict[str, Any]:
    """Delta file statistics from the Parquet footer: row count, nulls, min/max of plain columns."""
    mins: dict[str, object] = {}
    maxs: dict[str, object] = {}
    nulls: dict[str, int] = {}
    for j in range(meta.num_columns):
        column = meta.schema.column(j)
        usable = column.physical_type in ("BYTE_ARRAY", "INT64", "DOUBLE", "INT32") and (
            column.logical_type.type in ("STRING", "NONE", "INT")
        )
        col_min: Any = None
        col_max: Any = None
        null_count = 0
        for i in range(meta.num_row_groups):
            st = meta.row_group(i).column(j).statistics
            if st is None:
                usable = False
                continue
            null_count += st.null_count or 0
            if usable and st.has_min_max:
                col_min = st.min if col_min is None else min(col_min, st.min)
                col_max = st.max if col_max is None else max(col_max, st.max)
        nulls[column.name] = null_count
        if usable and col_min is not None:
            mins[column.name], maxs[column.name] = col_min, col_max
    return {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def version(path: str) -> int | None:
    if not is_delta(path):
        return None
    return int(_open(path).version())


def sql_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
