"""The console layer: progress for people (rich, or silent with --quiet) and the one-line errors
they see; operators get the logging module instead."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
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

        # Let go of the spinner before stopping it: a Ctrl-C landing anywhere in here must not
        # make close() stop it a second time (the display library fails on that).
        status, self._status = self._status, None
        if status is not None:
            status.stop()
            elapsed = time.perf_counter() - self._started
            self._console.print(f"[green]✓[/] {self._message} [dim]({elapsed:.1f}s)[/]")

    def close(self, ok: bool = True) -> None:
        if ok:
            self._finish()
            return
        status, self._status = self._status, None
        if status is not None:
            # Unwinding a Ctrl-C or an error: the spinner may be half started or half stopped
            # (the display library is not interrupt-safe); clearing it must not replace what
            # is being raised.
            with contextlib.suppress(Exception):
                status.stop()


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


# Exit codes (README "The command line"): 1 an error the message says how to fix, 2 a bad
# command line (nothing was done), 3 an unexpected failure (a bug: --debug shows the traceback).
EXIT_ERROR, EXIT_USAGE, EXIT_UNEXPECTED, EXIT_ABORTED = 1, 2, 3, 130


def exit_code(
    command: Callable[[], object],
    debug: bool = False,
    diagnose: Callable[[BaseException], Exception | None] | None = None,
) -> int:
    """Run a command and turn what it raised into an exit code and one `Error: <what failed>.
    <what to do>` line on stderr, with every part of every configured secret removed.

    `diagnose(exc)` may explain an unexpected failure (a data file gone from the warehouse, say)
    as an error the user can act on; then it is shown as such and exits 1."""
    import warnings

    import click

    from .errors import FunnelPulseError, Interrupted
    from .redact import scrub

    warnings.formatwarning = lambda message, *args, **kwargs: f"Warning: {message}\n"
    try:
        code = command()
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_ABORTED
    except click.UsageError as exc:
        where = f" See `{exc.ctx.command_path} --help`." if exc.ctx else ""
        message = exc.format_message().rstrip()
        end = "" if message.endswith((".", "?", "!")) else "."
        click.echo(f"Error: {message}{end}{where}", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except Interrupted as exc:  # Ctrl-C, and the command said what it had done
        click.echo(scrub(f"Stopped: {exc}"), err=True)
        return EXIT_ABORTED
    except FunnelPulseError as exc:
        if debug:
            raise
        click.echo(scrub(f"Error: {exc}"), err=True)
        return EXIT_ERROR
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # Exception, and a native library's panic (a BaseException)
        if debug:
            raise
        known = None
        if diagnose is not None:
            try:
                known = diagnose(exc)
            except Exception:  # the diagnosis is a courtesy: never hide the real failure
                known = None
        if known is not None:
            click.echo(scrub(f"Error: {known}"), err=True)
            return EXIT_ERROR
        message = f"Error: unexpected {type(exc).__name__}: {exc}. Re-run with --debug for details"
        click.echo(scrub(message), err=True)
        return EXIT_UNEXPECTED
    return code if isinstance(code, int) else 0


_wakeup: list[Any] = []


def stop_on_interrupt(grace_s: float = 10.0) -> None:
    """Make Ctrl-C always stop the process: after `grace_s` (or a second Ctrl-C) it exits 130.

    Python runs its SIGINT handler only between bytecodes, so a thread blocked in a native
    library (an object store's retries, a table commit) never sees Ctrl-C. The interpreter's C
    handler also writes the signal to a wake-up file descriptor, at once: a watcher thread reads
    it. A command stopped this way is a kill, which the journal and commit protocols survive.
    Call once, from the main thread of the command-line process.
    """
    import os
    import signal
    import socket
    import sys
    import threading
    import time

    reader, writer = socket.socketpair()
    _wakeup[:] = [reader, writer]  # kept open for the life of the process
    writer.setblocking(False)
    try:
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        return

    def watch() -> None:
        deadline: float | None = None
        while True:
            reader.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0))
            try:
                data = reader.recv(64)
            except TimeoutError:
                data = b""
            if signal.SIGINT not in data and deadline is None:
                continue
            if deadline is not None and (signal.SIGINT in data or time.monotonic() >= deadline):
                sys.stderr.write("Aborted.\n")
                sys.stderr.flush()
                os._exit(EXIT_ABORTED)
            if deadline is None:
                deadline = time.monotonic() + grace_s

    threading.Thread(target=watch, name="funnelpulse-interrupt", daemon=True).start()
