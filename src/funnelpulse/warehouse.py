"""What keeps a warehouse consistent when processes die or race: one writer at a time, a journal
for every step that commits several tables, and recovery of a step a killed process left half done.

- The writer lock is ``fcntl.flock`` on ``<warehouse>/_funnelpulse/writer.lock``: the kernel drops it
  the moment its process dies, so a ``kill -9`` can never leave a warehouse locked. It is re-entrant
  within a process. For a ``gs://``/``s3://`` warehouse the lock file is in the local temp folder, so
  it serializes the writers of one machine; writers on different machines are caught by the table
  log's own commit check and the loser stops with an ``Error:`` asking to re-run.
- A journal ``_funnelpulse/pending/<kind>-<id>.json`` is written before a step's first commit and
  removed after its last. One left behind means the step died in between; the next writing command
  finishes it (re-ingests the file, re-builds the range) or, when the input is gone, undoes its
  commits and says what to re-run. Readers refuse to show the half-written state and say what to run.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from . import build_records, faults, tables
from .console import Progress, SilentProgress
from .errors import InputError, WarehouseError
from .ingest import FileReader, FileResult, IngestResult, check_file, list_uri
from .locks import META as META
from .locks import _meta_dir
from .locks import stream_lock as stream_lock
from .locks import take_flock as take_flock
from .locks import writer_active as writer_active
from .locks import writer_lock as writer_lock
from .raw_lines import fingerprint

# ---------------------------------------------------------------------------------------------
# Journals


def _pending_dir(warehouse: str) -> str:
    meta = _meta_dir(warehouse)
    return str(meta / "pending") if meta is not None else f"{warehouse.rstrip('/')}/{META}/pending"


def _write_json(location: str, record: dict[str, Any]) -> None:
    data = json.dumps(record, indent=1, default=str).encode()
    if "://" in location:
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(location)
        with filesystem.open_output_stream(inner) as out:  # an object appears whole or not at all
            out.write(data)
        return
    folder = os.path.dirname(location)
    os.makedirs(folder, exist_ok=True)
    temporary = f"{location}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, location)  # atomic: a reader sees the old state or the whole journal
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove(location: str) -> None:
    if "://" in location:
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(location)
        with contextlib.suppress(FileNotFoundError, OSError):
            filesystem.delete_file(inner)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(location)


def pending(warehouse: str) -> list[dict[str, Any]]:
    """The journals of steps that started and have not finished (oldest first)."""
    folder = _pending_dir(warehouse)
    found: list[dict[str, Any]] = []
    if "://" in folder:
        from pyarrow import fs

        filesystem, inner = fs.FileSystem.from_uri(folder)
        infos = filesystem.get_file_info(fs.FileSelector(inner, allow_not_found=True))
        names = [(i.path, f"{folder.split('://')[0]}://{i.path}") for i in infos]
        for inner_path, uri in sorted(names):
            if not inner_path.endswith(".json"):
                continue
            with filesystem.open_input_stream(inner_path) as handle:
                record = json.loads(handle.read())
            record["_journal"] = uri
            found.append(record)
    elif os.path.isdir(folder):
        for name in os.listdir(folder):
            if not name.endswith(".json"):
                continue  # a .tmp is a journal whose writing died: its step never committed
            location = os.path.join(folder, name)
            try:
                with open(location, "rb") as handle:
                    record = json.loads(handle.read())
            except (OSError, ValueError):
                continue
            record["_journal"] = location
            found.append(record)
    return sorted(found, key=lambda r: str(r.get("started", "")))


@contextlib.contextmanager
def journal(warehouse: str, kind: str, **record: Any) -> Iterator[dict[str, Any]]:
    """Journal one multi-table step: written before its first commit, removed after its last.

    The step's data files carry the journal's tag in their names, so recovery can tell the
    files a killed write left behind from everything else. On an exception the journal stays:
    the next command finishes or undoes the step.
    """
    tag = uuid.uuid4().hex[:12]
    entry = {"kind": kind, "tag": tag, "started": datetime.now(UTC).isoformat(), **record}
    location = f"{_pending_dir(warehouse)}/{kind}-{tag}.json"
    try:
        _write_json(location, entry)
    except OSError as exc:
        raise tables.storage_error(warehouse, exc) from exc
    faults.checkpoint(f"{kind}.journal_written")
    token = tables.FILE_TAG.set(tag)
    try:
        yield entry
    except Exception:
        # A step that failed (not died) is undone at once when possible; else the journal stays
        # and the next command finishes or undoes it.
        with contextlib.suppress(Exception):
            entry["_journal"] = location
            _undo(warehouse, entry)
            _drop_orphans(warehouse, entry)
            _remove(location)
        raise
    finally:
        tables.FILE_TAG.reset(token)
    _remove(location)


def finish(record: dict[str, Any]) -> None:
    _remove(record["_journal"])


def versions(warehouse: str, names: tuple[str, ...]) -> dict[str, int | None]:
    """Each table's current version (None: no table yet): what an undo goes back to."""
    return {name: tables.version(tables.table_path(warehouse, name)) for name in names}


# ---------------------------------------------------------------------------------------------
# Recovery


INGEST_TABLES = (tables.BRONZE, tables.QUARANTINE)
DETECT_TABLES = (tables.ANOMALIES, tables.INCIDENTS)


def _build_tables() -> tuple[str, ...]:
    from .engines.base import MODELS

    return tuple(m.name for m in MODELS)


def recover(
    warehouse: str,
    progress: Progress | None = None,
    *,
    superseded: Callable[[dict[str, Any]], bool] = lambda record: False,
) -> None:
    """Finish or undo every step a killed process left half done. Call with the writer lock held.

    `superseded(record)` says the current command redoes that step anyway: its journal is then
    left for the command to drop when it has done so.
    """
    progress = progress or SilentProgress()
    for record in pending(warehouse):
        if superseded(record):
            continue
        kind = record.get("kind")
        if kind == "ingest":
            _recover_ingest(warehouse, record, progress)
        elif kind == "build":
            _recover_build(warehouse, record, progress)
        elif kind == "detect":
            # Undone, not redone: the detect record was not written, so the next detect redoes
            # what this one had found to do.
            progress.step("Undoing the interrupted detect")
            _undo(warehouse, record)
        _drop_orphans(warehouse, record)
        finish(record)


def drop_superseded(warehouse: str, done: Callable[[dict[str, Any]], bool]) -> None:
    """Remove the journals of interrupted steps that the step just finished has redone."""
    for record in pending(warehouse):
        if done(record):
            _drop_orphans(warehouse, record)
            finish(record)


def _recover_ingest(warehouse: str, record: dict[str, Any], progress: Progress) -> None:
    source, local = record["source"], record.get("path")
    if local and os.path.isfile(local) and fingerprint(local) == record["ingest_id"]:
        progress.step(f"Completing the interrupted ingest of {source}")
        ingest_file(warehouse, Path(local), progress, source=source, recovering=True)
        return
    progress.step(f"Undoing the interrupted ingest of {source}")
    _undo(warehouse, record)
    warnings.warn(
        f"the ingest of {source} was interrupted and has been undone, because the file is no "
        f"longer there or has changed. Run `funnelpulse ingest {source}` to load it",
        stacklevel=2,
    )


def _recover_build(warehouse: str, record: dict[str, Any], progress: Progress) -> None:
    from . import incremental
    from .engines import get_engine
    from .engines.base import DateRange

    since, until = record.get("since"), record.get("until")
    label = f"{since or 'start'}..{until or 'end'}"
    progress.step(f"Completing the interrupted build of {label}")
    runs = record.get("runs")
    if runs:  # an incremental build: the set of dates of its runs, in one pass as it was
        days = incremental.covered(
            [(date.fromisoformat(a), date.fromisoformat(b)) for a, b in runs]
        )
        dates = DateRange.of(date.fromisoformat(d) for d in days)
    else:
        dates = DateRange(
            date.fromisoformat(since) if since else None,
            date.fromisoformat(until) if until else None,
        )
    _build_and_record(get_engine("duckdb"), warehouse, dates, progress, allow_shrink=False)


def _build_and_record(
    engine: Any, warehouse: str, dates: Any, progress: Progress, allow_shrink: bool
) -> Any:
    """Check bronze against the last build's record, build, and record what was consumed (the
    recovery of an interrupted build; `build` makes these checks itself before its journal).

    Call inside the build's journal: a build that dies before its record is written is finished
    by the next command, which writes the record then.
    """
    if dates.is_all:  # a full rewrite needs nothing of a damaged newest change: set it aside
        for name in tables.BUILT_TABLES:
            tables.set_aside(tables.table_path(warehouse, name))
    bronze = build_records.bronze_state(warehouse)
    build_records.check_bronze(warehouse, bronze, allow_shrink)
    return _build_recorded(engine, warehouse, dates, progress, bronze)


def _build_recorded(
    engine: Any,
    warehouse: str,
    dates: Any,
    progress: Progress,
    bronze: build_records.BronzeState | None,
) -> Any:
    """Build `dates` and record `bronze` (already checked) as what was consumed."""
    result = engine.build(warehouse, dates, progress)
    faults.checkpoint("build.all_committed")
    if bronze is not None:
        build_records.append(warehouse, engine.name, dates.since, dates.until, bronze)
    return result


def _undo(warehouse: str, record: dict[str, Any]) -> None:
    """Put each table the step changed back to its version before the step."""
    for name, before in record.get("versions", {}).items():
        path = tables.table_path(warehouse, name)
        now = tables.version(path)
        if now is None or now == before:
            continue
        tables.restore(path, before)


def _drop_orphans(warehouse: str, record: dict[str, Any]) -> None:
    """Delete the data files the step wrote but never committed (a killed write leaves them)."""
    tag = record.get("tag")
    if not tag:
        return
    kind = record.get("kind")
    names = (
        INGEST_TABLES
        if kind == "ingest"
        else DETECT_TABLES
        if kind == "detect"
        else _build_tables()
    )
    for name in names:
        tables.drop_uncommitted(tables.table_path(warehouse, name), tag)


# ---------------------------------------------------------------------------------------------
# Ingest as one step (the reading is the engine's)


def ingest_file(
    warehouse: str,
    path: Path,
    progress: Progress | None = None,
    source: str | None = None,
    *,
    recovering: bool = False,
    read: FileReader | None = None,
) -> FileResult:
    """Ingest one raw file, replacing whatever an earlier ingest of it produced.

    `source` names the file in the tables when it was staged from a URI. All or nothing as users
    see it: under the writer lock, journaled from before the first commit to after the last, so
    a crash in between is finished or undone by the next command (see recover).
    """
    if read is None:
        from .engines import local_reader

        read = local_reader()
    progress = progress or SilentProgress()
    header = check_file(path)
    source = source or str(path.resolve())
    ingest_id = fingerprint(path)
    with writer_lock(warehouse, progress):
        if not recovering:
            recover(warehouse, progress, superseded=lambda r: r.get("source") == source)
        progress.step(f"Reading {path.name}")
        local = None if "://" in source else str(path.resolve())
        with journal(
            warehouse,
            "ingest",
            source=source,
            path=local,
            ingest_id=ingest_id,
            versions=versions(warehouse, INGEST_TABLES),
        ):
            result = read(warehouse, path, source, ingest_id, header, progress)
            faults.checkpoint("ingest.quarantine_committed")
        # Same source, ingested again in full: interrupted ingests of it need nothing more.
        drop_superseded(warehouse, lambda r: r.get("source") == source)
    return result


def ingest(
    warehouse: str,
    paths: list[str | Path],
    progress: Progress | None = None,
    read: FileReader | None = None,
) -> IngestResult:
    """Ingest local files, or URIs (gs://, s3://, file://; a URI ending in / means every file in it)."""
    if not paths:
        raise InputError("No input files given. Pass one or more CSV, CSV.gz or Parquet files")
    result = IngestResult()
    given = {str(Path(str(p)).resolve()) for p in paths if "://" not in str(p)}
    with writer_lock(warehouse, progress):
        # Finish what a killed ingest or build left, except files this command ingests anyway.
        recover(warehouse, progress, superseded=lambda r: r.get("source") in given)
        for path in paths:
            text = str(path)
            if "://" not in text:
                result.files.append(ingest_file(warehouse, Path(text), progress, read=read))
                continue
            for uri, local in _staged(text, progress or SilentProgress()):
                done = ingest_file(warehouse, local, progress, source=uri, read=read)
                local.unlink(missing_ok=True)
                result.files.append(done)
    return result


def _staged(uri: str, progress: Progress) -> Iterator[tuple[str, Path]]:
    """Copy remote files one at a time to local disk, where DuckDB reads them at full speed."""
    import tempfile

    from pyarrow import fs

    with tempfile.TemporaryDirectory(prefix="funnelpulse-stage-") as folder:
        for remote in list_uri(uri):
            filesystem, name = fs.FileSystem.from_uri(remote)
            local = Path(folder, Path(name).name)
            progress.step(f"Copying {remote}")
            fs.copy_files(
                name,
                str(local),
                source_filesystem=filesystem,
                destination_filesystem=fs.LocalFileSystem(),
            )
            yield remote, local


# ---------------------------------------------------------------------------------------------
# What readers check


def problems(warehouse: str) -> list[str]:
    """What a reader would get wrong now: steps a killed process left half done (and what to run).

    Empty while a writer is running: its journals are work in progress, not damage.
    """
    records = pending(warehouse)
    if not records or writer_active(warehouse):
        return []
    out = []
    for record in records:
        if record.get("kind") == "ingest":
            out.append(
                f"the ingest of {record.get('source')} was interrupted before it finished, so "
                "bronze_events and quarantine_events may be incomplete. Run "
                f"`funnelpulse ingest {record.get('source')}` to complete it"
            )
        elif record.get("kind") == "build":
            # An interrupted incremental build is redone by the next plain `build` (its dates
            # were not recorded as built); a ranged one by the same range.
            flags = "".join(
                f" --{k} {record[k]}"
                for k in ("since", "until")
                if record.get(k) is not None and not record.get("runs")
            )
            out.append(
                "a build was interrupted before every table was written, so the gold tables may "
                f"be stale against silver_events. Run `funnelpulse build{flags}` to finish it"
            )
        elif record.get("kind") == "detect":
            out.append(
                "a detect was interrupted between writing the anomalies and the incidents, so "
                "they may disagree. Run `funnelpulse detect` to finish it"
            )
    return out


def check_consistent(warehouse: str) -> None:
    """Refuse to read a warehouse a killed step left half written; say what to run instead."""
    found = problems(warehouse)
    if found:
        text = "; ".join(found)
        raise WarehouseError(text[0].upper() + text[1:])


# ---------------------------------------------------------------------------------------------
# The build as one step


def _covers(since: date | None, until: date | None, record: dict[str, Any]) -> bool:
    """True when a build of since..until redoes everything the journaled build would have."""
    if record.get("kind") != "build":
        return False
    old_since, old_until = record.get("since"), record.get("until")
    low = since is None or (old_since is not None and date.fromisoformat(old_since) >= since)
    high = until is None or (old_until is not None and date.fromisoformat(old_until) <= until)
    return low and high


def build(
    engine: Any,
    warehouse: str,
    dates: Any,
    progress: Progress | None = None,
    *,
    full: bool = False,
    allow_shrink: bool = False,
) -> Any:
    """Run `engine.build` as one journaled step under the writer lock (silver and gold together),
    refusing a bronze that lost rows since the last build unless `allow_shrink`.

    With no dates and not `full`, only the dates whose bronze files changed since the last build
    are rebuilt (incremental.py); the record of what was built is written after the last commit.
    """
    from . import incremental
    from .engines.base import BuildResult, DateRange

    progress = progress or SilentProgress()
    since, until = dates.since, dates.until
    ranged = not dates.is_all
    with writer_lock(warehouse, progress):
        if dates.is_all:  # before the versions are read for the journal
            for name in tables.BUILT_TABLES:
                if tables.set_aside(tables.table_path(warehouse, name)) is not None:
                    full = True  # the table went back a version: what was built is unknown
        # An incremental build redoes only what changed, so it lets recovery finish every
        # interrupted build first; a full or ranged one redoes what it covers itself.
        redoes = (lambda r: _covers(since, until, r)) if (full or ranged) else (lambda r: False)
        recover(warehouse, progress, superseded=redoes)
        # Checked before the journal: a refused build leaves nothing to finish or undo.
        bronze = build_records.bronze_state(warehouse)
        build_records.check_bronze(warehouse, bronze, allow_shrink)
        fingerprints = incremental.bronze_fingerprints(warehouse)
        models = incremental.models_hash()
        runs: list[tuple[date, date]] | None = None  # None: the whole range asked for
        if not full and not ranged:
            plan = incremental.plan(warehouse, fingerprints, models)
            if plan.empty:
                progress.step("Nothing to build: no bronze date changed since the last build")
                return BuildResult(engine=engine.name)
            if not plan.full:
                runs = plan.runs
                progress.step(
                    f"Building what changed since the last build: {incremental.describe(runs)}"
                )
        record: dict[str, Any] = {
            "engine": engine.name,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "versions": versions(warehouse, _build_tables()),
        }
        if runs is not None:
            record["since"], record["until"] = runs[0][0].isoformat(), runs[-1][1].isoformat()
            record["runs"] = [[a.isoformat(), b.isoformat()] for a, b in runs]
        with journal(warehouse, "build", **record):
            if runs is None:
                result = _build_recorded(engine, warehouse, dates, progress, bronze)
            else:
                # One pass over exactly the changed dates: one commit per table, so readers see
                # each table before or after the build, and no date between the runs is redone.
                chosen = DateRange.of(date.fromisoformat(d) for d in incremental.covered(runs))
                result = engine.build(warehouse, chosen, progress)
                faults.checkpoint("build.all_committed")
                if bronze is not None:
                    build_records.append(warehouse, engine.name, runs[0][0], runs[-1][1], bronze)
            old = incremental.read_state(warehouse)
            if runs is not None:
                built: set[str] | None = incremental.covered(runs)
            elif ranged:
                known = set(fingerprints) | set((old or {}).get("dates", {}))
                built = {d for d in known if dates.contains(date.fromisoformat(d))}
            else:
                built = None
            state = incremental.new_state(old, built, fingerprints, models)
            _write_json(incremental.state_location(warehouse), state)
            faults.checkpoint("build.state_written")
        drop_superseded(warehouse, redoes)
    return result


@contextlib.contextmanager
def writing(warehouse: str, progress: Progress | None = None) -> Iterator[None]:
    """For a command that writes: hold the lock and first repair what a killed step left."""
    with writer_lock(warehouse, progress):
        recover(warehouse, progress)
        yield


# ---------------------------------------------------------------------------------------------
# Vacuum

DEFAULT_RETAIN_HOURS = 168  # a week, as the table format itself recommends


def vacuum(
    warehouse: str,
    retain_hours: float = DEFAULT_RETAIN_HOURS,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict[str, tuple[int, int]]:
    """Delete the files of table versions older than `retain_hours` and files no commit made.

    Returns, per table, the number of files and bytes deleted (or, dry, that would be). Versions
    newer than the retention stay readable; a smaller retention frees more and keeps less history.
    """
    if retain_hours < 0:
        raise WarehouseError("--retain-hours must be 0 or more. Give the hours of history to keep")
    if not any(tables.exists(tables.table_path(warehouse, n)) for n in tables.ALL_TABLES):
        # never create a lock folder (or a warehouse) where the user mistyped a path
        raise WarehouseError(
            f"No warehouse at {warehouse} (no tables there). Give the right --warehouse"
        )
    out: dict[str, tuple[int, int]] = {}
    with writing(warehouse, progress):
        for name in tables.ALL_TABLES:
            path = tables.table_path(warehouse, name)
            if not tables.is_delta(path):
                continue
            if "://" in warehouse:  # nothing registers there (see running.py)
                sizes = [tables.file_size(path, f) for f in tables.vacuum(path, retain_hours, True)]
                sizes = [s for s in sizes if s > 0]  # the log may list files already deleted
                if sizes and not dry_run:
                    tables.vacuum(path, retain_hours, dry_run=False)
                out[name] = (len(sizes), sum(sizes))
                continue
            gone = vacuum_table(path, retain_hours, dry_run)
            out[name] = (len(gone), sum(gone.values()))
    return out


def vacuum_table(path: str, retain_hours: float | None, dry_run: bool) -> dict[str, int]:
    """Delete (or, dry, list) the files of a local table that no version within `retain_hours`
    (None: the table's own retention) names and no running process may still need; returns
    their sizes by relative path. Never waits for a running process (see running.py)."""
    from . import running

    candidates = tables.vacuum(path, retain_hours, dry_run=True)
    if not candidates:
        return {}
    # read after listing: a writer that began before the listing is marked busy by now
    kept = running.kept_files(path, candidates, running.live_claims(path_warehouse(path)))
    named = running.current_files(path)  # a commit made since the listing names these
    gone: dict[str, int] = {}
    for rel in candidates:
        if rel in kept or running.absolute(path, rel) in named:
            continue
        size = tables.file_size(path, rel)
        if size > 0:  # the log may still list files already deleted
            gone[rel] = size
    if not dry_run:
        tables.delete_files(path, list(gone))
    return gone


def path_warehouse(table_path: str) -> str:
    """The warehouse a table of it lives in (tables are its direct children)."""
    return str(Path(table_path).parent)
