"""The `[serve]` section of funnelpulse.toml: what `funnelpulse serve` watches, runs and listens on.

Precedence, as for every setting: the file's `[serve]` table, then `FUNNELPULSE_SERVE_<KEY>`
variables, then the command's flags. Unknown keys are errors with a suggestion.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..config import SINKS, check_bind
from ..errors import ConfigError
from .digest import parse_at

LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class ServeSettings:
    """What one `serve` process runs (the warehouse and detection settings stay in Settings)."""

    watch: tuple[str, ...] = ()  # landing folders
    kafka: str = ""  # kafka://HOST:PORT/TOPIC for the live stream ("" = no stream)
    host: str = "127.0.0.1"
    port: int = 8080
    dashboard_port: int = 8501  # 0: no dashboard
    alert: bool = False
    sinks: tuple[str, ...] = ()  # () = the configured sinks and routes
    engine: str = ""  # "" = the [funnelpulse] engine
    master: str = ""
    log_format: str = "text"
    poll_s: float = 2.0  # seconds between looks at the landing folders
    no_files_hours: float = 26.0  # no file this long: logged; with alert, a no-data incident
    max_lag_s: float = 300.0  # /readyz fails when the stream has been behind longer than this
    alert_retry_s: float = 60.0  # wait before delivering again what a receiver did not take
    restart_max_s: float = 60.0  # the longest wait before restarting a crashed part
    stop_timeout_s: float = 20.0  # how long parts get to stop on SIGTERM before they are killed
    digest_at: str = ""  # HH:MM UTC: send yesterday's digest daily at this time ("" = no digest)
    digest_sinks: tuple[str, ...] = ()  # () = `sinks`, else the configured alert sinks

    def check(self) -> ServeSettings:
        for folder in self.watch:
            if "://" in folder and not (folder.startswith("gs://") and len(folder) > 5):
                raise ConfigError(
                    f"watch {folder}: a landing location is a local folder or gs://BUCKET/PREFIX. "
                    "Copy the files to a local landing folder and watch that"
                )
        if self.kafka and not self.kafka.startswith("kafka://"):
            raise ConfigError(f"kafka {self.kafka!r} must look like kafka://HOST:PORT/TOPIC")
        if not 1 <= self.port <= 65_535:
            raise ConfigError(f"port {self.port} is not a port number (1-65535)")
        if not 0 <= self.dashboard_port <= 65_535:
            raise ConfigError(
                f"dashboard_port {self.dashboard_port} is not a port number (0 for no dashboard)"
            )
        if self.dashboard_port == self.port:
            raise ConfigError(f"port and dashboard_port are both {self.port}. Give two ports")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format {self.log_format!r}: use text or json")
        try:
            parse_at(self.digest_at)
        except ValueError:
            raise ConfigError(
                f"digest_at {self.digest_at!r} must be a time of day as HH:MM (UTC), e.g. "
                '"08:00", or empty for no digest'
            ) from None
        for sink in (*self.sinks, *self.digest_sinks):
            if sink not in SINKS:
                raise ConfigError(f"sink {sink!r} is not a sink. Known sinks: {', '.join(SINKS)}")
        for name in ("poll_s", "no_files_hours", "max_lag_s", "alert_retry_s", "restart_max_s",
                     "stop_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be above 0 (now {getattr(self, name)})")
        if not self.watch and not self.kafka:
            raise ConfigError(
                "Nothing to serve: give --watch FOLDER (a landing folder) or --kafka URL, or "
                "set watch in the [serve] section of funnelpulse.toml"
            )
        check_bind(self.host, os.environ.get("FUNNELPULSE_API_TOKEN"), "FUNNELPULSE_API_TOKEN",
                   "the API")
        return self


KEYS = {f.name: f.type for f in fields(ServeSettings)}


def _convert(key: str, value: Any, where: str) -> Any:
    default = getattr(ServeSettings(), key)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if not isinstance(value, list | tuple):
                raise ValueError(value)
            return tuple(str(v) for v in value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        kind = {bool: "true or false", tuple: "a list of texts", int: "a whole number",
                float: "a number"}.get(type(default), "a text")
        raise ConfigError(f"{key} {where} must be {kind} (got {value!r})") from None


def load(config_file: str | Path | None, **flags: Any) -> ServeSettings:
    """The serve settings from the file's [serve] table, FUNNELPULSE_SERVE_* and the flags
    (a flag that is None or empty was not given)."""
    values: dict[str, Any] = {}
    path = Path(config_file) if config_file else Path("funnelpulse.toml")
    if path.is_file():
        data = tomllib.loads(path.read_text(encoding="utf-8")).get("serve", {})
        if not isinstance(data, dict):
            raise ConfigError(f"In {path}, serve must be a table: write [serve]")
        for key, value in data.items():
            if key not in KEYS:
                close = difflib.get_close_matches(key, list(KEYS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"Unknown setting {key!r} in [serve] of {path}{hint}. Known keys: "
                    f"{', '.join(KEYS)}"
                )
            values[key] = _convert(key, value, f"in [serve] of {path}")
    for env, text in os.environ.items():
        if not env.startswith("FUNNELPULSE_SERVE_"):
            continue
        key = env.removeprefix("FUNNELPULSE_SERVE_").lower()
        if key not in KEYS:
            raise ConfigError(f"{env} is not a [serve] setting. Known keys: {', '.join(KEYS)}")
        values[key] = _convert(key, text, f"from {env}")
    for key, value in flags.items():
        if value is None or value == ():
            continue
        values[key] = _convert(key, value, "given")
    return replace(ServeSettings(), **values).check()
