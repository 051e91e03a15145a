"""Long-running processes register what they may be reading or writing, so that `vacuum` (and the
stream's own maintenance) never deletes a file one of them still needs, and never waits for it.

A running process (the stream) keeps one heartbeat file in `<warehouse>/_funnelpulse/running/`.
While it works on the tables (a stream batch: reads, MERGEs, commits, maintenance) the file holds
`busy_since`, the wall time that work began. A vacuum lists what it could delete, then reads the
heartbeats, and keeps, for every process still alive:

- every file written since `busy_since` (a MERGE writes its files before the commit that names
  them: deleting one in between leaves a commit that names a missing file), and
- every file of the table version that was current at `busy_since` (a reader may still be
  reading that version, or any newer one, whose other files are newer than `busy_since` too).

Then it reloads each table and never deletes a file its newest version names. A process is alive
while its pid runs on this machine (a kill -9 leaves a file that the next vacuum removes). For a
remote warehouse (gs://) nothing is registered: run `vacuum` there with the stream stopped, or with
a retention longer than a stream batch.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

log = logging.getLogger(__name__)

RUNNING_DIR = ("_funnelpulse", "running")
# File times and the wall clock of one machine, compared: allow for coarse file-time resolution.
SLACK_S = 2.0


@dataclass(frozen=True)
class Claim:
    """One live process's heartbeat: who, and since when it has been working on the tables."""

    pid: int
    host: str
    role: str
    busy_since: float | None
    file: Path


def _folder(warehouse: str) -> Path | None:
    if "://" in warehouse:
        return None
    return Path(warehouse, *RUNNING_DIR)


class Registration:
    """The heartbeat file of this process (a no-op for a remote warehouse)."""

    def __init__(self, warehouse: str, role: str) -> None:
        folder = _folder(warehouse)
        self.role = role
        self.path = None if folder is None else folder / f"{role}-{os.getpid()}.json"
        self._since: float | None = None
        self._warned = False

    def _write(self) -> None:
        if self.path is None:
            return
        body = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "role": self.role,
            "busy_since": self._since,
            "beat_at": time.time(),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(body))
            os.replace(tmp, self.path)  # a reader sees the old or the new file, whole
        except OSError as exc:  # a full disk must not stop the stream; vacuum then keeps less
            if not self._warned:
                log.warning("could not write the heartbeat %s (%s)", self.path, exc)
                self._warned = True

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Mark the work on the tables in between: files it writes or reads are kept."""
        if self._since is not None:  # nested: the outer mark already covers it
            yield
            return
        self._since = time.time()
        self._write()
        try:
            yield
        finally:
            self._since = None
            self._write()

    def start(self) -> Registration:
        self._write()
        return self

    def close(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Registration:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's process: cannot be checked, so it is kept
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_claims(warehouse: str) -> list[Claim]:
    """The heartbeats of processes still running; those of dead ones are removed."""
    folder = _folder(warehouse)
    if folder is None or not folder.is_dir():
        return []
    claims = []
    for file in sorted(folder.glob("*.json")):
        try:
            body = json.loads(file.read_text())
            claim = Claim(
                int(body["pid"]), str(body["host"]), str(body["role"]), body["busy_since"], file
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not ours: judged again by the next vacuum
        if _alive(claim.pid, claim.host):
            claims.append(claim)
        else:
            file.unlink(missing_ok=True)
    return claims


def running(warehouse: str, role: str) -> list[Claim]:
    """Live processes of one role (e.g. "stream") on this warehouse."""
    return [c for c in live_claims(warehouse) if c.role == role]


def kept_files(path: str, candidates: list[str], claims: list[Claim]) -> set[str]:
    """Which of a table's vacuum candidates (paths relative to the table) a live process may
    still need (see the module doc)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    since = [c.busy_since for c in claims if c.busy_since is not None]
    if not since or not candidates:
        return set()
    earliest = min(since) - SLACK_S
    keep: set[str] = set()
    root = Path(path)
    for rel in candidates:
        try:
            if (root / unquote(rel)).stat().st_mtime >= earliest:
                keep.add(rel)
        except FileNotFoundError:
            pass
    try:
        table = DeltaTable(path)
        table.load_as_version(datetime.fromtimestamp(earliest, UTC))
        named = {_absolute(f) for f in table.file_uris()}
    except (DeltaError, OSError, ValueError) as exc:
        if table_created_after(path, earliest):
            return keep  # no version older than the work exists: none can be in use
        log.info("keeping every candidate of %s: its version then is unknown (%s)", path, exc)
        return set(candidates)
    keep.update(rel for rel in candidates if _absolute(str(root / unquote(rel))) in named)
    return keep


def table_created_after(path: str, when: float) -> bool:
    """True when the table's first commit is newer than `when` (epoch seconds)."""
    first = Path(path, "_delta_log", f"{0:020d}.json")
    try:
        return first.stat().st_mtime > when
    except FileNotFoundError:
        return False


def _absolute(uri: str) -> str:
    local = unquote(uri[len("file://") :] if uri.startswith("file://") else uri)
    return str(Path(local).resolve())


def current_files(path: str) -> set[str]:
    """The files the newest version of a table names, as absolute local paths."""
    from deltalake import DeltaTable

    return {_absolute(f) for f in DeltaTable(path).file_uris()}


def absolute(path: str, relative: str) -> str:
    return _absolute(str(Path(path) / unquote(relative)))
