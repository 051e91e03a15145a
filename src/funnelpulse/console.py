"""Progress for people (rich, or silent with --quiet); operators get the logging module instead."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Progress(Protocol):
    def step(self, message: str) -> None: ...


class SilentProgress:
    """Used by the library when nobody is watching."""

    def step(self, message: str) -> None:
        return None


class RichProgress:
    """Shows each long step with a spinner and its elapsed time on stderr."""

    def __init__(self) -> None:
        from rich.console import Console

        self._console = Console(stderr=True)
        self._status: Any = None
        self._started = 0.0
        self._message = ""

    def step(self, message: str) -> None:
        import time

        self._finish()
        self._message = message
        self._started = time.perf_counter()
        self._status = self._console.status(message)
        self._status.start()

    def _finish(self) -> None:
        import time

        if self._status is not None:
            self._status.stop()
            elapsed = time.perf_counter() - self._started
            self._console.print(f"[green]✓[/] {self._message} [dim]({elapsed:.1f}s)[/]")
            self._status = None

    def close(self, ok: bool = True) -> None:
        if ok:
            self._finish()
        elif self._status is not None:
            self._status.stop()
            self._status = None


@contextmanager
def progress(quiet: bool) -> Iterator[Progress]:
    if quiet:
        yield SilentProgress()
        return
    shown = RichProgress()
    try:
        yield shown
    except BaseException:
        shown.close(ok=False)
        raise
    shown.close()
