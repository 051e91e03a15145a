"""The warehouse's locks: one writer at a time (re-entrant within a process) and one stream.

Both are ``fcntl.flock`` on files under ``<warehouse>/_funnelpulse/``: the kernel drops a lock the
moment its process dies, so a ``kill -9`` never leaves a warehouse locked. For a ``gs://``/``s3://``
warehouse the lock files are in the local temp folder (see warehouse.py for what that covers).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .console import Progress, SilentProgress
from .errors import WarehouseError

META = "_funnelpulse"


# ---------------------------------------------------------------------------------------------
# The writer lock


@dataclass
class _Held:
    guard: threading.RLock
    fd: int = -1
    depth: int = 0


_locks: dict[str, _Held] = {}
_locks_guard = threading.Lock()


def _meta_dir(warehouse: str) -> Path | None:
    """The local folder of the warehouse's own bookkeeping; None for an object-store warehouse."""
    if "://" in warehouse and not warehouse.startswith("file://"):
        return None
    root = warehouse[len("file://") :] if warehouse.startswith("file://") else warehouse
    return Path(root, META)


def lock_file(warehouse: str) -> Path:
    meta = _meta_dir(warehouse)
    if meta is not None:
        return meta / "writer.lock"
    digest = hashlib.sha256(warehouse.rstrip("/").encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir(), f"funnelpulse-{digest}.lock")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another funnelpulse process"
    if not info:
        return "another funnelpulse process"
    return f"funnelpulse `{info.get('command', '?')}` (pid {info.get('pid', '?')})"


@contextlib.contextmanager
def writer_lock(
    warehouse: str, progress: Progress | None = None, timeout: float | None = None
) -> Iterator[None]:
    """Hold the warehouse's writer lock (waiting for the current writer, if any, to finish)."""
    path = lock_file(warehouse)
    key = str(path.absolute())
    with _locks_guard:
        held = _locks.setdefault(key, _Held(threading.RLock()))
    held.guard.acquire()
    try:
        if held.depth == 0:
            held.fd = _acquire(path, progress or SilentProgress(), timeout)
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                with contextlib.suppress(OSError):
                    os.ftruncate(held.fd, 0)
                os.close(held.fd)  # closing the descriptor drops the flock
                held.fd = -1
    finally:
        held.guard.release()


def take_flock(
    fd: int, timeout: float | None, on_wait: Callable[[], object], poll_s: float = 0.1
) -> bool:
    """Hold an exclusive flock on `fd`, waiting for its holder (`on_wait` runs once, when it has
    to wait). False when `timeout` seconds passed first: the caller closes `fd` and says why."""
    started = time.monotonic()
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if timeout is not None and time.monotonic() - started > timeout:
                return False
            if not told:
                on_wait()
                told = True
            time.sleep(poll_s)


def _acquire(path: Path, progress: Progress, timeout: float | None) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise WarehouseError(
            f"Cannot write to the warehouse at {path.parent.parent}: {exc.strerror or exc}. "
            "Check the path, its permissions and free disk space"
        ) from exc

    def waiting() -> None:
        progress.step(f"Waiting for {_holder(path)} to finish writing this warehouse")

    if not take_flock(fd, timeout, waiting):
        os.close(fd)
        raise WarehouseError(
            f"{_holder(path)} is still writing this warehouse. Wait for it to finish and re-run"
        )
    import sys

    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:3]))
    info = {"pid": os.getpid(), "command": command, "since": datetime.now(UTC).isoformat()}
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


@contextlib.contextmanager
def stream_lock(warehouse: str) -> Iterator[None]:
    """Held by the one stream that may write a warehouse's live tables: a second is refused at
    once, with who holds it (a kill -9 frees it, as the writer lock)."""
    path = lock_file(warehouse).with_name("stream.lock")
    if _meta_dir(warehouse) is None:
        path = lock_file(warehouse).with_suffix(".stream.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise WarehouseError(
            f"Cannot write to the warehouse at {warehouse}: {exc.strerror or exc}. The stream "
            "writes its live tables there: give a writable --warehouse"
        ) from exc
    try:
        if not take_flock(fd, 0, lambda: None):
            raise WarehouseError(
                f"{_holder(path)} is already streaming into this warehouse. Stop it (Ctrl-C) "
                "before starting another stream here, or give another --warehouse"
            )
        import sys

        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:3]))
        info = {"pid": os.getpid(), "command": command, "since": datetime.now(UTC).isoformat()}
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # nobody holds it now
    finally:
        os.close(fd)  # drops the flock


def writer_active(warehouse: str) -> bool:
    """True while some process (this one included) holds the warehouse's writer lock."""
    path = lock_file(warehouse)
    held = _locks.get(str(path.absolute()))
    if held is not None and held.depth > 0:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the probe's shared lock
