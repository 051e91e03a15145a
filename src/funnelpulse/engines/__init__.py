"""Engines by name: the one list of them; optional ones are imported only when asked for."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .base import Engine

if TYPE_CHECKING:
    from ..config import Settings
    from ..ingest import FileReader

# name -> (module, class). Adding an engine is one line here plus its adapter module.
REGISTRY: dict[str, tuple[str, str]] = {
    "duckdb": ("funnelpulse.engines.duckdb", "DuckDBEngine"),
    "spark": ("funnelpulse.engines.spark", "SparkEngine"),
}
ENGINE_NAMES = tuple(REGISTRY)


def _adapter(name: str) -> Any:
    if name not in REGISTRY:
        from ..errors import ConfigError

        raise ConfigError(f"Unknown engine {name!r}. Use one of: {', '.join(ENGINE_NAMES)}")
    module, cls = REGISTRY[name]
    return getattr(import_module(module), cls)


def get_engine(name: str, **options: object) -> Engine:
    """The adapter for `name`, built with engine-specific options (e.g. Spark's master)."""
    return _adapter(name)(**options)  # type: ignore[no-any-return]


def engine_for(name: str, settings: Settings) -> Engine:
    """The adapter for `name`, configured from the settings (each adapter picks its own keys)."""
    return _adapter(name).from_settings(settings)  # type: ignore[no-any-return]


def local_reader() -> FileReader:
    """The reader of one local raw file, in-process (DuckDB): the DuckDB engine's ingest uses it,
    and so does completing an interrupted ingest, whichever engine began it."""
    from .duckdb_ingest import read_file

    return read_file
