"""One typed, frozen settings object: defaults, then funnelpulse.toml, then FUNNELPULSE_* env, then flags.

Every value is checked for its type and range before any step runs, so a bad setting stops the
command with one `Error:` naming the key and where it came from, never half-way through a step.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .alert_policy import Route, Silence, parse_routes, parse_silences
from .errors import ConfigError

# The engine registry's names (engines/__init__.py REGISTRY; a test keeps the two equal): settings
# sit below the engines and never import them.
ENGINES = ("duckdb", "spark")
METHODS = ("seasonal", "reference")
LIVE_TAILS = ("inflation", "fragments")  # anomaly/open_window.py Options.tail
SEVERITIES = ("low", "medium", "high", "critical")
# What the stream does when a Kafka partition ends below its committed offset.
OFFSET_RESETS = ("error", "earliest", "latest")
SINKS = ("console", "file", "webhook", "slack", "email", "pagerduty", "alertmanager")
# Secrets live only in the environment; a sink that needs one is refused before any work without it.
SINK_SECRETS = {
    "webhook": "FUNNELPULSE_WEBHOOK_URL",
    "slack": "FUNNELPULSE_SLACK_WEBHOOK_URL",
    "pagerduty": "FUNNELPULSE_PAGERDUTY_ROUTING_KEY",
}
URL_SECRETS = ("webhook", "slack")  # sinks whose secret is the URL itself
# Sinks whose URL is a setting (not a secret): the setting they need.
SINK_URLS = {"pagerduty": "pagerduty_url", "alertmanager": "alertmanager_url"}
# Tables of the config file that other modules read (librdkafka options: streaming.kafka_client).
OTHER_TABLES = ("kafka", "routes", "silences", "serve")  # [serve]: serve/settings.py
# The [spark] table: each key is the setting `spark_<key>` (FUNNELPULSE_SPARK_<KEY>).
SPARK_KEYS = ("master", "driver_memory", "executor_memory", "conf")
# A JVM memory size as Spark takes it: 512m, 4g, 1536M, 2gb.
MEMORY_SIZE = r"[1-9][0-9]*\s*[kKmMgGtT][bB]?"
# FUNNELPULSE_* variables that are not settings (secrets, deployment, test hooks).
OTHER_VARIABLES = (
    "webhook_url",
    "slack_webhook_url",
    "smtp_user",
    "smtp_password",
    "pagerduty_routing_key",
    "user",
    "kill_at",
    "config",
    "log_level",
    "api_token",
)


@dataclass(frozen=True)
class Rule:
    """What one setting accepts: its type, an inclusive range or a set of choices."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed (alpha > 0)
    high_open: bool = False
    choices: tuple[str, ...] = ()
    nonempty: bool = False
    divides: int | None = None  # the value must divide this (bucket minutes divide an hour)
    pattern: str = ""  # a non-empty text must match this in full (memory sizes)

    def describe(self) -> str:
        """The rule in words, for error messages."""
        if self.kind is bool:
            return "true or false"
        if self.kind is dict:
            return "a table of spark.* keys and their values"
        if self.pattern:
            return 'a size such as "512m" or "4g" (or "" for the default)'
        if self.kind is tuple:
            return f"a list of {', '.join(self.choices)} (at least one, no repeats)"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        noun = {int: "an integer", float: "a number", str: "a text"}[self.kind]
        if self.low is not None and self.high is not None:
            if not (self.low_open or self.high_open):
                whole = f" that divides {self.divides}" if self.divides else ""
                return f"{noun} from {_num(self.low)} to {_num(self.high)}{whole}"
            lo = "above" if self.low_open else "at least"
            hi = "below" if self.high_open else "at most"
            return f"{noun} {lo} {_num(self.low)} and {hi} {_num(self.high)}"
        if self.low is not None:
            return f"{noun} {'above' if self.low_open else 'of at least'} {_num(self.low)}"
        return "a non-empty text" if self.nonempty else noun


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _setting(default: Any, rule: Rule, help: str) -> Any:
    return field(default=default, metadata={"rule": rule, "help": help})


@dataclass(frozen=True)
class Settings:
    """Everything a run needs; secrets are never stored here, only read from the environment."""

    warehouse: str = _setting("./warehouse", Rule(str, nonempty=True), "warehouse folder or URI")
    engine: str = _setting("duckdb", Rule(str, choices=ENGINES), "batch engine")
    spark_master: str = _setting("local[*]", Rule(str, nonempty=True), "Spark master URL")
    shuffle_partitions: int = _setting(8, Rule(int, 1, 10_000), "Spark shuffle partitions")
    spark_driver_memory: str = _setting(
        "", Rule(str, pattern=MEMORY_SIZE), "Spark driver heap (local: a share of RAM when unset)"
    )
    spark_executor_memory: str = _setting(
        "", Rule(str, pattern=MEMORY_SIZE), "Spark executor heap (the cluster's when unset)"
    )
    spark_conf: tuple[tuple[str, str], ...] = _setting(
        (), Rule(dict), "any spark.* setting, as key = value"
    )
    watermark_s: int = _setting(7200, Rule(int, 0, 30 * 86_400), "stream lateness allowed, s")
    stream_retention_s: int = _setting(
        3600, Rule(int, 10, 30 * 86_400), "removed files and log entries a stream keeps, s"
    )
    max_future_s: int = _setting(
        3600, Rule(int, 0, 366 * 86_400), "event times ahead of the clock allowed, s"
    )
    on_offset_reset: str = _setting(
        "error",
        Rule(str, choices=OFFSET_RESETS),
        "when a Kafka partition ends below the stream's offset",
    )
    settle_s: float = _setting(
        10.0, Rule(float, 0, 86_400), "seconds a landed file must stay unchanged before it is read"
    )
    # anomaly detection
    detect_method: str = _setting("seasonal", Rule(str, choices=METHODS), "detection method")
    history_days: int = _setting(14, Rule(int, 3, 90), "past days a baseline uses")
    min_views: int = _setting(50, Rule(int, 1, 1_000_000_000), "smallest hourly denominator")
    alpha: float = _setting(
        1e-5, Rule(float, 0, 1, low_open=True, high_open=True), "two-sided p-value threshold"
    )
    false_alarms_per_week: float = _setting(
        1.0, Rule(float, 0, 1000, low_open=True), "target false incidents per week (detection)"
    )
    live_false_alerts_per_day: float = _setting(
        0.5, Rule(float, 0, 1000, low_open=True), "target false live incidents per day"
    )
    live_bucket_minutes: int = _setting(
        2, Rule(int, 1, 60, divides=60), "live bucket size, minutes"
    )
    live_tail: str = _setting(
        "inflation",
        Rule(str, choices=LIVE_TAILS),
        "how a live drop's lower tail is bounded (inflation or fragments)",
    )
    live_check_every_s: float = _setting(
        10.0, Rule(float, 0, 3600), "least wall seconds between open-window checks"
    )
    min_severity: str = _setting("medium", Rule(str, choices=SEVERITIES), "lowest alerted")
    cooldown_h: int = _setting(6, Rule(int, 0, 8760), "hours between alerts of one segment")
    alert_sinks: tuple[str, ...] = _setting(("console",), Rule(tuple, choices=SINKS), "sinks")
    alert_file: str = _setting("", Rule(str), "JSON-lines file of the file sink")
    alert_timeout_s: float = _setting(
        5.0, Rule(float, 0, 600, low_open=True), "seconds to wait for a receiver's answer"
    )
    smtp_host: str = _setting("localhost", Rule(str, nonempty=True), "SMTP server")
    smtp_port: int = _setting(25, Rule(int, 1, 65_535), "SMTP port")
    smtp_from: str = _setting("funnelpulse@localhost", Rule(str, nonempty=True), "sender")
    smtp_to: str = _setting("", Rule(str), "recipients of the email sink")
    pagerduty_url: str = _setting(
        "https://events.pagerduty.com/v2/enqueue",
        Rule(str, nonempty=True),
        "PagerDuty Events API v2 endpoint of the pagerduty sink",
    )
    alertmanager_url: str = _setting(
        "", Rule(str), "Alertmanager base URL of the alertmanager sink (http://host:9093)"
    )
    dashboard_url: str = _setting(
        "http://localhost:8501", Rule(str, nonempty=True), "dashboard address put in alert links"
    )
    resolve_after_h: int = _setting(
        3, Rule(int, 1, 168), "hours a segment scores normal before its batch incident resolves"
    )
    no_data_minutes: float = _setting(
        15.0,
        Rule(float, 0, 1440, low_open=True),
        "minutes without any event before a running stream raises a no-data incident",
    )
    session_rates: bool = _setting(
        False, Rule(bool), "detect also scores the session conversion rates"
    )
    session_window_minutes: int = _setting(
        60, Rule(int, 1, 1440), "conversion window of the session rates detect scores, minutes"
    )
    funnel_memory_mb: int = _setting(
        1536, Rule(int, 0, 1_048_576), "DuckDB memory cap of session funnels, MB (0: no cap)"
    )

    # [[routes]] and [[silences]] of the config file (alert_policy.py)
    routes: tuple[Route, ...] = ()
    silences: tuple[Silence, ...] = ()

    def __post_init__(self) -> None:
        for name in RULES:
            check(name, getattr(self, name))

    @property
    def warehouse_path(self) -> str:
        return self.warehouse.rstrip("/") if "://" in self.warehouse else str(Path(self.warehouse))

    def check_sinks(self, sinks: list[str] | tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The sinks an alerting run will use, refused before any work when one cannot deliver."""
        names = tuple(sinks) if sinks else self.alert_sinks
        check("alert_sinks", names, "from --sink" if sinks else "")
        if not sinks:  # every sink a route can send to must be able to deliver too
            names += tuple(dict.fromkeys(s for r in self.routes for s in r.sinks if s not in names))
        for name in names:
            if name == "file" and not self.alert_file:
                raise ConfigError(
                    "The file alert sink needs alert_file. Set it in funnelpulse.toml or "
                    "FUNNELPULSE_ALERT_FILE"
                )
            if name == "email" and not self.smtp_to:
                raise ConfigError(
                    "The email alert sink needs smtp_to. Set it in funnelpulse.toml or "
                    "FUNNELPULSE_SMTP_TO"
                )
            secret = SINK_SECRETS.get(name)
            if secret and not os.environ.get(secret):
                raise ConfigError(
                    f"The {name} alert sink needs {secret}. Set it in the environment"
                )
            setting = SINK_URLS.get(name)
            if setting and not _is_http_url(getattr(self, setting)):
                raise ConfigError(
                    f"The {name} alert sink needs {setting} set to an http(s) URL with a host "
                    f"(now {_show(getattr(self, setting))}). Set it in funnelpulse.toml or "
                    f"FUNNELPULSE_{setting.upper()}"
                )
            if secret and name in URL_SECRETS and not _is_http_url(os.environ[secret]):
                # the value is a secret: name the variable, never show it
                raise ConfigError(
                    f"{secret} is not an http(s) URL with a host. Set it to the URL your "
                    f"{name} service gave you"
                )
        return names


RULES: dict[str, Rule] = {
    f.name: f.metadata["rule"] for f in fields(Settings) if "rule" in f.metadata
}


def _is_http_url(value: str) -> bool:
    """What urllib can post to: http(s), a host, and no whitespace or control characters."""
    from urllib.parse import urlsplit

    if re.search(r"[\s\x00-\x1f\x7f]", value):
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        return False


def _bad(name: str, value: Any, where: str, problem: str) -> ConfigError:
    """`Setting <name> = <value> (<where>) <problem>. Fix it <there>`: one line naming the key."""
    place = f" ({where})" if where else ""
    if where.startswith("in "):
        fix = f"Fix it in {where[3:]}"
    elif where.startswith("from "):
        fix = f"Fix {where[5:]}"
    else:
        fix = "Fix the value"
    return ConfigError(f"Setting {name} = {_show(value)}{place} {problem}. {fix}")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def check(name: str, value: Any, where: str = "") -> Any:
    """Raise ConfigError unless `value` is an exactly typed, in-range value for setting `name`."""
    rule = RULES[name]
    must = f"must be {rule.describe()}"
    if rule.kind is bool:
        if not isinstance(value, bool):
            raise _bad(name, value, where, f"{must}, not {_kind(value)}")
        return value
    if rule.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(name, value, where, f"{must} (a whole number, not {_kind(value)})")
    elif rule.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(name, value, where, f"{must}, not {_kind(value)}")
        if not math.isfinite(value):
            raise _bad(name, value, where, must)
    elif rule.kind is str:
        if not isinstance(value, str):
            raise _bad(name, value, where, f"{must} in quotes, not {_kind(value)}")
        if rule.nonempty and not value.strip():
            raise _bad(name, value, where, "must not be empty")
        if rule.choices and value not in rule.choices:
            raise _bad(name, value, where, must + _did_you_mean(value, rule.choices))
        if rule.pattern and value and not re.fullmatch(rule.pattern, value.strip()):
            raise _bad(name, value, where, must)
        return value
    elif rule.kind is dict:
        return _check_conf(name, value, where)
    else:
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            raise _bad(name, value, where, must)
        unknown = [v for v in value if v not in rule.choices]
        if unknown:
            raise _bad(
                name,
                value,
                where,
                f"has an unknown sink {_show(unknown[0])}"
                + _did_you_mean(unknown[0], rule.choices)
                + f"; use {', '.join(rule.choices)}",
            )
        if not value or len(set(value)) != len(value):
            raise _bad(name, value, where, must)
        return value
    too_low = rule.low is not None and (value <= rule.low if rule.low_open else value < rule.low)
    too_high = rule.high is not None and (
        value >= rule.high if rule.high_open else value > rule.high
    )
    if too_low or too_high or (rule.divides and rule.divides % value):
        raise _bad(name, value, where, must)
    return float(value) if rule.kind is float else value


def _check_conf(name: str, value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """Spark settings as sorted (key, text) pairs: keys start with `spark.`, values are scalars."""
    pairs = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(pairs, tuple | list):
        raise _bad(name, value, where, "must be a table of spark.* keys and their values")
    checked: dict[str, str] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise _bad(name, value, where, "must be a table of spark.* keys and their values")
        key, text = pair[0].strip(), pair[1]
        if not key.startswith("spark.") or len(key) <= len("spark."):
            raise _bad(name, key, where, "is not a Spark setting (its key must start with spark.)")
        if isinstance(text, bool):
            text = "true" if text else "false"
        if isinstance(text, float) and not math.isfinite(text):
            raise _bad(name, text, where, f"(for {key}) must be a finite number")
        if not isinstance(text, str | int | float) or not str(text).strip():
            raise _bad(name, text, where, f"(for {key}) must be a text, number or boolean")
        checked[key] = str(text).strip()
    return tuple(sorted(checked.items()))


def parse_conf(texts: list[str] | tuple[str, ...], where: str) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` texts (--conf flags, FUNNELPULSE_SPARK_CONF items) as checked pairs."""
    pairs = []
    for text in texts:
        key, sep, val = text.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ConfigError(
                f"{where} {text!r} is not KEY=VALUE. Write it as spark.some.key=value"
            )
        pairs.append((key.strip(), val.strip()))
    return _check_conf("spark_conf", pairs, where)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {int: "an integer", float: "a decimal number", str: "a text", list: "a list"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _did_you_mean(word: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {_show(close[0])}?)" if close else ""


_INT_TEXT = re.compile(r"[+-]?\d[\d_]*")


def _from_text(name: str, text: str, where: str) -> Any:
    """An environment variable's text as the setting's type; "3.7" is not an integer, "true" neither."""
    rule = RULES[name]
    raw = text.strip()
    if rule.kind is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if raw.lower() not in words:
            raise _bad(name, text, where, f"must be {rule.describe()}")
        return words[raw.lower()]
    if rule.kind is int:
        if not _INT_TEXT.fullmatch(raw):
            raise _bad(name, text, where, f"must be {rule.describe()} (a whole number)")
        return int(raw)
    if rule.kind is float:
        try:
            return float(raw)
        except ValueError:
            raise _bad(name, text, where, f"must be {rule.describe()}") from None
    if rule.kind is tuple:
        return tuple(v.strip() for v in raw.split(",") if v.strip())
    if rule.kind is dict:  # spark.a=1,spark.b=x
        return parse_conf([v for v in raw.split(",") if v.strip()], where)
    return text


def _from_value(name: str, value: Any) -> Any:
    """A TOML or Python value as the setting's type, without any lossy conversion."""
    if RULES[name].kind is tuple:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list | tuple):
            return tuple(value)
    if RULES[name].kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _unknown(key: str, where: str) -> ConfigError:
    return ConfigError(
        f"Unknown setting {key!r} {where}{_did_you_mean(key, list(RULES))}. "
        f"Known settings: {', '.join(RULES)}"
    )


def read_file(path: Path) -> dict[str, Any]:
    """The settings of a TOML file (its [funnelpulse] table, or its top level), unchecked.

    Tables named in OTHER_TABLES belong to other readers and are skipped here.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}). Fix the file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path} ({exc}). Check the --config path") from exc
    data.pop("kafka", None)  # librdkafka options: streaming.kafka_client.file_kafka_options
    for name in OTHER_TABLES:
        data.pop(name, None)
    spark = _spark_table(data.pop("spark", {}), path)
    if "funnelpulse" in data:
        table = data.pop("funnelpulse")
        if not isinstance(table, dict):
            raise ConfigError(f"In {path}, funnelpulse must be a table: write [funnelpulse]")
        for key in data:
            raise _unknown(key, f"in {path} (outside [funnelpulse])")
        return {**table, **spark}
    return {**data, **spark}


def _spark_table(table: Any, path: Path) -> dict[str, Any]:
    """The [spark] table's keys as the settings they are (driver_memory -> spark_driver_memory)."""
    if not isinstance(table, dict):
        raise ConfigError(f"In {path}, spark must be a table: write [spark]")
    for key in table:
        if key not in SPARK_KEYS:
            raise ConfigError(
                f"Unknown setting {key!r} in [spark] of {path}{_did_you_mean(key, SPARK_KEYS)}. "
                f"Known keys of [spark]: {', '.join(SPARK_KEYS)} (conf holds any spark.* key)"
            )
    if "conf" in table and not isinstance(table["conf"], dict):
        raise ConfigError(
            f'In {path}, [spark] conf must be a table: write [spark.conf] and "spark.key" = value'
        )
    return {f"spark_{key}": value for key, value in table.items()}


def _warn_near_misses() -> None:
    """A mistyped FUNNELPULSE_* variable would be ignored silently: name the setting it resembles."""
    import warnings

    for env in os.environ:
        if not env.startswith("FUNNELPULSE_"):
            continue
        key = env.removeprefix("FUNNELPULSE_").lower()
        if key in RULES or key in OTHER_VARIABLES or key.startswith("serve_"):
            continue  # FUNNELPULSE_SERVE_<KEY>: the [serve] section's own (serve/settings.py)
        close = difflib.get_close_matches(key, list(RULES), n=1, cutoff=0.8)
        if close:
            warnings.warn(
                f"{env} is not a setting and is ignored; did you mean "
                f"FUNNELPULSE_{close[0].upper()}?",
                stacklevel=3,
            )


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the config file, the environment and explicit overrides (None = unset)."""
    values: dict[str, Any] = {}
    path = Path(config_file) if config_file else Path("funnelpulse.toml")
    if config_file and not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"Config file {path} {problem}. Check the --config path")
    if path.is_file():
        where = f"in {path}"
        for key, value in read_file(path).items():
            if key not in RULES:
                raise _unknown(key, where)
            values[key] = check(key, _from_value(key, value), where)
    for name in RULES:
        env = f"FUNNELPULSE_{name.upper()}"
        if env in os.environ:
            where = f"from {env}"
            values[name] = check(name, _from_text(name, os.environ[env], where), where)
    _warn_near_misses()
    if path.is_file():
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        if "routes" in raw:
            values["routes"] = parse_routes(raw["routes"], path, SINKS)
        if "silences" in raw:
            values["silences"] = parse_silences(raw["silences"], path)
    for name, value in overrides.items():
        if name not in RULES:
            raise _unknown(name, "given")
        if value is None:
            continue
        if name == "spark_conf":  # --conf flags add to (and win over) the file's [spark.conf]
            value = {**dict(values.get(name, ())), **dict(check(name, value, "given"))}
        values[name] = check(name, _from_value(name, value))
    return replace(Settings(), **values)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.1, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, secret: str | None, env: str, what: str) -> None:
    """Refuse to serve beyond loopback without a secret (the API's token, the SQL password)."""
    if not is_loopback(host) and not secret:
        raise ConfigError(
            f"Serving {what} on {host} (beyond this machine) needs {env}. Set it to a long "
            "random secret, or serve on 127.0.0.1"
        )
