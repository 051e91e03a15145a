"""The landing rule for watched folders: which files are data, and when a file is complete.

A name starting with `.` or `_`, or ending in `.tmp` or `.part`, is a file being written (or not
data at all) and is never read. Any other file is taken once its size and modification time have
stayed the same for `settle_s` seconds: a writer that appends in chunks, without writing to a
temporary name and renaming, is waited for instead of read half-way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

IGNORED_PREFIXES = (".", "_")
IGNORED_SUFFIXES = (".tmp", ".part")


def ignored(name: str) -> bool:
    """A file being written or not data: hidden, `_`-prefixed, `.tmp` or `.part`."""
    return name.startswith(IGNORED_PREFIXES) or name.lower().endswith(IGNORED_SUFFIXES)


def signature(stat: os.stat_result) -> tuple[int, int]:
    """What changes when a file is written: its size and modification time (ns)."""
    return stat.st_size, stat.st_mtime_ns


@dataclass
class Landing:
    """Files of a folder that are data and complete: unchanged for `settle_s` seconds, by what
    was observed since the first look or by the file's own modification time."""

    settle_s: float
    clock: Callable[[], float] = time.time
    _first: dict[str, tuple[tuple[int, int], float]] = field(default_factory=dict)
    waiting: int = 0  # data files seen at the last look that have not settled yet

    def settled(self, path: Path, stat: os.stat_result) -> bool:
        now = self.clock()
        sig = signature(stat)
        seen = self._first.get(str(path))
        if seen is None or seen[0] != sig:
            self._first[str(path)] = (sig, now)
            seen = self._first[str(path)]
        unchanged_s = max(now - seen[1], now - stat.st_mtime_ns / 1e9)
        return unchanged_s >= self.settle_s

    def forget(self, path: Path) -> None:
        self._first.pop(str(path), None)

    def candidates(self, folder: Path) -> list[tuple[Path, os.stat_result]]:
        """The data files of `folder` that have settled, with what they looked like."""
        out = []
        self.waiting = 0
        for entry in os.scandir(folder):
            if ignored(entry.name) or not entry.is_file():
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:  # renamed or removed between listing and looking
                continue
            path = Path(entry.path)
            if self.settled(path, stat):
                out.append((path, stat))
            else:
                self.waiting += 1
        return out
