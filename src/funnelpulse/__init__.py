"""FunnelPulse: e-commerce funnel monitoring on a Delta Lake lakehouse, with DuckDB or Spark."""

from .config import Settings, load_settings
from .errors import FunnelPulseError
from .generate import generate_events, write_events
from .pipeline import Pipeline

__all__ = [
    "FunnelPulseError",
    "Pipeline",
    "Settings",
    "generate_events",
    "load_settings",
    "write_events",
]
__version__ = "0.1.0"
