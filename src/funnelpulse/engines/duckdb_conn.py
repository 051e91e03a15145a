"""The local connection under its former name, for modules not yet moved to `funnelpulse.localdb`."""

from __future__ import annotations

from ..localdb import connect

__all__ = ["connect"]
