"""The command line's flag types and shared flags: each refuses a bad value while parsing, so a
mistyped flag costs nothing (no file written, no table touched)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from .config import ENGINES as ENGINE_NAMES
from .config import SINKS

ENGINE_OPTION = click.option(
    "--engine", type=click.Choice(ENGINE_NAMES), default=None, help="Default duckdb."
)
MASTER_OPTION = click.option(
    "--master", default=None, help="Spark master URL (local[*], spark://..., yarn)."
)


def _spark_conf(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    """--conf KEY=VALUE flags as checked (key, value) pairs; None when none was given."""
    from .config import parse_conf
    from .errors import ConfigError

    if not value:
        return None
    try:
        return parse_conf(value, "--conf")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


CONF_OPTION = click.option(
    "--conf",
    "spark_conf",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_spark_conf,
    help="A Spark setting for --engine spark (repeat; e.g. spark.driver.memory=4g).",
)
SINK_OPTION = click.option(
    "--sink",
    "sinks",
    multiple=True,
    type=click.Choice(SINKS),
    help="Override the alert sinks (repeat for several).",
)
PORT = click.IntRange(1, 65_535)


class Seconds(click.FloatRange):
    """A finite number in a range: `nan` and `inf` are refused like any other bad value."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


POSITIVE = Seconds(min=0, min_open=True)
NON_NEGATIVE = Seconds(min=0)


class IsoDate(click.ParamType):
    """A UTC calendar date flag (YYYY-MM-DD), refused by the parser before any work."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date. Use YYYY-MM-DD", param, ctx)


DATE = IsoDate()


class IsoTime(click.ParamType):
    """A UTC time flag: YYYY-MM-DD, YYYY-MM-DDTHH:MM or 'YYYY-MM-DD HH:MM' (an offset is honoured)."""

    name = "YYYY-MM-DD[THH:MM]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(
                f"{value!r} is not a time. Use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)", param, ctx
            )
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


TIME = IsoTime()


def event_file(path: Path) -> Path:
    """An output name generate can write, refused before minutes of generating."""
    if not path.name.lower().endswith((".csv", ".csv.gz", ".parquet")):
        raise click.BadParameter(f"{path} must end in .csv, .csv.gz or .parquet")
    return path


def check_range(since: date | None, until: date | None) -> None:
    """An empty date range is a mistake, never a silent no-op."""
    if since and until and since > until:
        raise click.UsageError(f"--since {since} is after --until {until}. Swap them")
