"""The console layer: progress for people (rich, or silent with --quiet) and the one-line errors
they see; operators get the logging module instead."""

from __future__ import annotations

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

    from .anomaly.sinks import scrub
    from .errors import FunnelPulseError

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
