"""One typed, frozen settings object: defaults, then funnelpulse.toml, then FUNNELPULSE_* env, then flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

ENGINES = ("duckdb", "spark")


@dataclass(frozen=True)
class Settings:
    """Everything a run needs; secrets are never stored here, only read from the environment."""

    warehouse: str = "./warehouse"
    engine: str = "duckdb"
    spark_master: str = "local[*]"
    shuffle_partitions: int = 8
    watermark_s: int = 7200
    # anomaly detection
    detect_method: str = "seasonal"
    history_days: int = 14
    min_views: int = 50
    alpha: float = 1e-5
    false_alarms_per_week: float = 1.0  # target false incidents per week (detection)
    min_severity: str = "medium"
    cooldown_h: int = 6
    alert_sinks: tuple[str, ...] = ("console",)
    alert_file: str = ""
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_from: str = "funnelpulse@localhost"
    smtp_to: str = ""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"Unknown engine {self.engine!r}. Use one of: {', '.join(ENGINES)}")
        if self.watermark_s < 0:
            raise ConfigError("watermark_s must be >= 0")

    @property
    def warehouse_path(self) -> str:
        return self.warehouse.rstrip("/") if "://" in self.warehouse else str(Path(self.warehouse))


def _coerce(name: str, value: Any) -> Any:
    field = next(f for f in fields(Settings) if f.name == name)
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind.startswith("tuple"):
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Setting {name}={value!r} is not a valid {kind}") from exc


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Build settings from the config file, the environment and explicit overrides (None = unset)."""
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    path = Path(config_file) if config_file else Path("funnelpulse.toml")
    if config_file and not path.exists():
        raise ConfigError(f"Config file {path} does not exist. Check the --config path")
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML ({exc}). Fix the file") from exc
        table = data.get("funnelpulse", data)
        data.pop("kafka", None)  # librdkafka options: streaming.kafka_client.file_kafka_options
        for key, value in table.items():
            if key not in known:
                raise ConfigError(
                    f"Unknown setting {key!r} in {path}. Known: {', '.join(sorted(known))}"
                )
            values[key] = _coerce(key, value)
    for name in known:
        env = os.environ.get(f"FUNNELPULSE_{name.upper()}")
        if env is not None:
            values[name] = _coerce(name, env)
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value)
    return replace(Settings(), **values)
