"""What one detect run found, and the cube reads both the full and the incremental detect use."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from .incidents import Detected


@dataclass
class DetectResult:
    method: str
    anomalies: pa.Table
    segments: int
    hours: int
    # the end of the newest hour scored (batch incidents resolve by it)
    as_of: datetime | None = None
    # grouped, one per real event, with their lasting ids when written
    incidents: list[Detected] = field(default_factory=list)
    gaps: list[tuple[datetime, datetime]] = field(default_factory=list)  # hours never received
    rows: list[dict[str, Any]] = field(default_factory=list)  # the anomalies with evidence spans
    # what an incremental detect records once its tables are committed (detect_state.py)
    record: dict[str, Any] | None = None


def utc_hour(hour: np.datetime64) -> datetime:
    return hour.astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC)


def cube_columns(
    con, since: datetime | None = None
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:  # type: ignore[no-untyped-def]
    """The cube (from `since` on) as numpy columns, its text labels as integer codes plus their
    names."""
    where = f"WHERE hour >= TIMESTAMPTZ '{since.isoformat()}'" if since else ""
    t = con.sql(
        f"SELECT hour, brand, price_band, category_root, views, carts, purchases FROM cube {where}"
    ).to_arrow_table()
    out: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    for name in ("brand", "price_band", "category_root"):
        coded = t.column(name).fill_null("(none)").combine_chunks().dictionary_encode()
        out[name] = coded.indices.to_numpy(zero_copy_only=False)
        names[name] = [str(x) for x in coded.dictionary.to_pylist()]
    for name in ("views", "carts", "purchases"):
        out[name] = t.column(name).to_numpy()
    out["hour"] = t.column("hour").cast(pa.timestamp("us")).to_numpy()
    return out, names
