"""Annotations: known events (a promotion, a planned outage) marked by hand.

Detection raises no incident inside an annotation (its hours are blanked before scoring, so no
window holding them fires) and later baselines leave its hours out; charts show them. A mute or
silence is different: it still detects and records, and only holds back sending.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from .. import tables
from ..contract import ANNOTATION_SCHEMA
from ..errors import InputError
from .coverage import Blank

DIMENSIONS = ("shop", "brand", "price_band")


def parse_segment(text: str | None) -> str | None:
    """`dimension:value` checked; None (or `shop:all`) means the whole shop."""
    if text is None or text == "shop:all":
        return None
    dimension, sep, value = text.partition(":")
    if not sep or dimension not in DIMENSIONS[1:] or not value:
        raise InputError(
            f"{text!r} is not a segment. Write it dimension:value, e.g. brand:acme, "
            "price_band:<10 or shop:all"
        )
    return text


def _path(warehouse: str) -> str:
    return tables.table_path(warehouse, tables.ANNOTATIONS)


def read(warehouse: str) -> list[dict[str, Any]]:
    path = _path(warehouse)
    rows = tables.read(path).to_pylist() if tables.exists(path) else []
    return sorted(rows, key=lambda r: (r["start"], r["annotation_id"]))


def add(
    warehouse: str, start: datetime, end: datetime, text: str, segment: str | None = None
) -> dict[str, Any]:
    """Store one annotation and return it (with its id, for `annotate delete`)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise InputError(f"--end {end:%Y-%m-%d %H:%M} is not after --start. Swap them")
    if not text.strip():
        raise InputError("An annotation needs a text saying what happened")
    segment = parse_segment(segment)
    now = datetime.now(UTC)
    key = f"{start.isoformat()}|{end.isoformat()}|{segment}|{text}|{now.isoformat()}"
    row = {
        "annotation_id": "a" + hashlib.blake2b(key.encode(), digest_size=4).hexdigest(),
        "start": start,
        "end": end,
        "segment": segment,
        "text": text,
        "created_at": now,
    }
    tables.write(
        _path(warehouse), pa.Table.from_pylist([row], schema=ANNOTATION_SCHEMA), replace=()
    )
    return row


def delete(warehouse: str, annotation_id: str) -> dict[str, Any]:
    rows = read(warehouse)
    gone = [r for r in rows if r["annotation_id"] == annotation_id]
    if not gone:
        raise InputError(
            f"No annotation with id {annotation_id!r}. List them with `funnelpulse annotate list`"
        )
    keep = [r for r in rows if r["annotation_id"] != annotation_id]
    tables.write(_path(warehouse), pa.Table.from_pylist(keep, schema=ANNOTATION_SCHEMA))
    return gone[0]


def blanks(warehouse: str) -> list[Blank]:
    """The annotated spans as hours for detection to leave out."""
    return [Blank(r["start"], r["end"], r["segment"]) for r in read(warehouse)]


def covering(rows: list[dict[str, Any]], segment: str, start: datetime, end: datetime) -> bool:
    """Whether an annotation of `segment` (or of the whole shop) covers [start, end)."""
    return any(
        r["start"] <= start and end <= r["end"] and r["segment"] in (None, segment) for r in rows
    )
