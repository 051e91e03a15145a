"""FunnelPulse: e-commerce funnel monitoring on a Delta Lake lakehouse, with DuckDB or Spark.

The public names load on first use, so `funnelpulse --help` and other light commands do not
import Arrow, DuckDB or the generator's numpy code they never call.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings, load_settings
    from .errors import FunnelPulseError
    from .generate import generate_events, write_events
    from .pipeline import Pipeline

# public name -> the module that defines it
_PUBLIC = {
    "FunnelPulseError": ".errors",
    "Pipeline": ".pipeline",
    "Settings": ".config",
    "generate_events": ".generate",
    "load_settings": ".config",
    "write_events": ".generate",
}
__all__ = [
    "FunnelPulseError",
    "Pipeline",
    "Settings",
    "generate_events",
    "load_settings",
    "write_events",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'funnelpulse' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
