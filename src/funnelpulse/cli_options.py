"""The command line's flag types and shared flags: each refuses a bad value while parsing, so a
mistyped flag costs nothing (no file written, no table touched)."""

from __future__ import annotations

import math
from collections.abc import Callable
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
        raise usage_error(f"--since {since} is after --until {until}. Swap them")


def usage_error(message: str) -> click.UsageError:
    """A bad command line: exit 2 with `See funnelpulse CMD --help.` (the one CLI convention)."""
    return click.UsageError(message, click.get_current_context(silent=True))


def parsed_by(parse: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that checks a flag's value with a library parser while parsing: its
    error (the message names the flag) becomes a usage error, exit 2, before any work."""
    from .errors import FunnelPulseError

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or value == ():
            return value
        try:
            if isinstance(value, tuple):
                return tuple(parse(v) for v in value)
            return parse(value)
        except FunnelPulseError as exc:
            raise click.UsageError(str(exc), ctx) from None

    return callback


def _window(text: str) -> int:
    from .funnel import parse_window

    return parse_window(text)


def _kafka(url: str) -> str:
    from .streaming.kafka_url import parse_kafka

    parse_kafka(url)
    return url


def _source(url: str) -> str:
    from .errors import ConfigError

    if url.startswith("files://"):
        if not url[len("files://") :]:
            raise ConfigError(f"{url!r} names no folder. Use files://DIR")
        return url
    if url.startswith("kafka://"):
        return _kafka(url)
    raise ConfigError(f"Unknown source {url!r}. Use kafka://HOST:PORT/TOPIC or files://DIR")


def _segment(text: str) -> str:
    from .anomaly.workflow import split_segment

    split_segment(text)
    return text


def _duration(text: str) -> Any:
    from .anomaly.workflow import parse_duration

    return parse_duration(text)


WINDOW = parsed_by(_window)  # --window 30m -> seconds
KAFKA_URL = parsed_by(_kafka)  # kafka://HOST:PORT/TOPIC
SOURCE_URL = parsed_by(_source)  # kafka://... or files://DIR
SEGMENT = parsed_by(_segment)  # dimension:value
DURATION = parsed_by(_duration)  # 30m, 2h, 1d -> timedelta


def _annotation_segment(text: str) -> str:
    from .anomaly.annotations import parse_segment

    parse_segment(text)
    return text


ANNOTATION_SEGMENT = parsed_by(_annotation_segment)
