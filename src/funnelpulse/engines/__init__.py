"""Engines by name; optional ones are imported only when asked for."""

from __future__ import annotations

from .base import Engine


def get_engine(name: str, **options: object) -> Engine:
    if name == "duckdb":
        from .duckdb import DuckDBEngine

        return DuckDBEngine()
    if name == "spark":
        from .spark import SparkEngine

        return SparkEngine(**options)  # type: ignore[arg-type]
    from ..errors import ConfigError

    raise ConfigError(f"Unknown engine {name!r}. Use duckdb or spark")
