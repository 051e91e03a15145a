"""What an incremental `detect` must redo: the hours whose inputs changed since the last one.

A detect records, per event date, a fingerprint of the silver files it read (a build writes
every date it rebuilds under new file names), keeps that date's hourly cube (hour x brand x
price band x category root counts) in a cache file named by the fingerprint, and records the
segments it scored, a key of everything else scoring depends on (settings, method, annotations,
the detection code) and the evidence span of each anomaly. The next detect re-aggregates only the
changed dates from silver and re-scores the dates whose rows those dates can move: an hour's
counts reach the baselines of the next `history_days` days, their trailing week of dispersion,
the 24-hour windows over them and the firings of the day after (`reach_days`). A changed key or
segment set (a brand crossing the volume floor changes every test's threshold) re-scores it all.

The record is written after the anomalies and incidents are committed; a detect that dies before
is undone by the journal (warehouse.py) or, after its commits, simply redone by the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from typing import Any

import pyarrow as pa

from .. import tables
from ..config import Settings
from ..incremental import date_fingerprints, runs_of

STATE_FILE = "detect_state.json"
CUBE_DIR = "detect_cube"
FORMAT = 1
# The detection code whose change re-scores everything.
_CODE = (
    "scoring.py",
    "seasonal_method.py",
    "series.py",
    "session_rates.py",
    "coverage.py",
    "rootcause.py",
    "incidents.py",
    "detect.py",
    "detect_state.py",
    "detect_incremental.py",
    "detect_result.py",
)


def _meta(warehouse: str) -> str:
    return f"{warehouse.rstrip('/')}/_funnelpulse"


def state_location(warehouse: str) -> str:
    return f"{_meta(warehouse)}/{STATE_FILE}"


def cube_file(warehouse: str, day: str, fingerprint: str) -> str:
    return f"{_meta(warehouse)}/{CUBE_DIR}/{day}-{fingerprint}.parquet"


def _fs(location: str) -> tuple[Any, str]:
    from pyarrow import fs

    if "://" in location and not location.startswith("file://"):
        return fs.FileSystem.from_uri(location)
    local = location[len("file://") :] if location.startswith("file://") else location
    return fs.LocalFileSystem(), os.path.abspath(local)


def scoring_key(settings: Settings, method: str, blanks: list[Any]) -> str:
    """Everything besides the data that scoring depends on, hashed."""
    fields = (
        method,
        settings.history_days,
        settings.min_views,
        settings.false_alarms_per_week,
        settings.session_rates,
        settings.session_window_minutes,
    )
    text = repr(fields) + repr(sorted(repr(b) for b in blanks))
    code = resources.files(__package__)  # a folder, or a zip such as a wheel given to spark-submit
    for name in _CODE:
        text += code.joinpath(name).read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def silver_fingerprints(warehouse: str) -> dict[str, str]:
    return date_fingerprints(warehouse, tables.SILVER)


def read_state(warehouse: str) -> dict[str, Any] | None:
    filesystem, inner = _fs(state_location(warehouse))
    try:
        with filesystem.open_input_stream(inner) as handle:
            record = json.loads(handle.read())
    except (FileNotFoundError, OSError, ValueError):
        return None  # no record (or an unreadable one): the next detect is a full one
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    return record


def forget(warehouse: str) -> None:
    """Drop the record: the next detect scores everything (after a partial `--since` run)."""
    filesystem, inner = _fs(state_location(warehouse))
    with contextlib.suppress(FileNotFoundError, OSError):
        filesystem.delete_file(inner)


@dataclass(frozen=True)
class Plan:
    """What a detect does: everything (`full`), or re-aggregate `changed` dates and re-score
    the dates of `rescore` (runs of dates); `cached` dates come from the cube cache."""

    full: bool
    changed: list[date]
    rescore: list[tuple[date, date]]
    cached: dict[str, str]
    reason: str


def reach_days(settings: Settings) -> int:
    """How many days after a changed date its counts can still move a row (see module doc)."""
    return settings.history_days + 11


def plan(
    warehouse: str,
    state: dict[str, Any] | None,
    fingerprints: dict[str, str],
    key: str,
    settings: Settings,
) -> Plan:
    if state is None:
        return Plan(True, [], [], {}, "no record of an earlier detect")
    if state.get("key") != key:
        return Plan(True, [], [], {}, "the settings, annotations or detection changed")
    if not all(
        tables.is_delta(tables.table_path(warehouse, name))
        for name in (tables.ANOMALIES, tables.INCIDENTS)
    ):
        return Plan(True, [], [], {}, "the anomalies or incidents table is missing")
    recorded: dict[str, str] = state.get("dates", {})
    cached = {
        d: fp
        for d, fp in recorded.items()
        if fingerprints.get(d) == fp and _exists(cube_file(warehouse, d, fp))
    }
    changed = sorted(
        date.fromisoformat(d) for d in set(fingerprints) | set(recorded) if d not in cached
    )
    if not changed:
        return Plan(False, [], [], cached, "nothing changed")
    days = [date.fromisoformat(d) for d in fingerprints]
    first, last = min(days, default=changed[0]), max(days, default=changed[-1])
    touched = set(changed)
    if settings.session_rates:
        # A session's counts sit at its entry hour, up to a window before its later steps; and
        # the last hours of the old data were held back as unfinished until more data came.
        back = -(-(settings.session_window_minutes + 60) // 1440)
        old_last = max((date.fromisoformat(d) for d in recorded), default=None)
        extra = {d - timedelta(k) for d in changed for k in range(1, back + 1)}
        if old_last is not None and (last != old_last or old_last in touched):
            extra |= {old_last - timedelta(k) for k in range(back + 1)}
        touched |= extra
    reach = reach_days(settings)
    rescore = {
        d + timedelta(k)
        for d in touched
        for k in range(-1, reach + 1)  # a window ending on d may start the day before
        if first <= d + timedelta(k) <= last
    }
    return Plan(
        False, changed, runs_of(sorted(rescore), 1), cached, f"{len(changed)} date(s) changed"
    )


def _exists(location: str) -> bool:
    from pyarrow import fs

    filesystem, inner = _fs(location)
    return bool(filesystem.get_file_info(inner).type == fs.FileType.File)


def write_cube(warehouse: str, cube: pa.Table, fingerprints: dict[str, str]) -> None:
    """Cache the cube rows of each date (the `hour` column's UTC date) under its fingerprint."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if cube.num_rows == 0:
        return
    days = pc.cast(pc.cast(cube["hour"], pa.timestamp("us")), pa.date32())
    folder_fs, folder = _fs(f"{_meta(warehouse)}/{CUBE_DIR}")
    folder_fs.create_dir(folder, recursive=True)
    for value in pc.unique(days).to_pylist():
        day = value.isoformat()
        if day not in fingerprints:
            continue  # not a date silver has (cannot happen: every cube hour comes from silver)
        part = cube.filter(pc.equal(days, pa.scalar(value, pa.date32())))
        filesystem, inner = _fs(cube_file(warehouse, day, fingerprints[day]))
        temporary = f"{inner}.tmp"
        pq.write_table(part, temporary, filesystem=filesystem)
        filesystem.move(temporary, inner)  # a cache file appears whole or not at all


def cube_schema(warehouse: str, dates: dict[str, str]) -> pa.Schema:
    """The schema of the cached cube (from one of its files)."""
    import pyarrow.parquet as pq

    day, fp = next(iter(sorted(dates.items())))
    filesystem, inner = _fs(cube_file(warehouse, day, fp))
    return pq.read_schema(inner, filesystem=filesystem)


def cube_dataset(warehouse: str, dates: dict[str, str], schema: pa.Schema) -> Any:
    """The cached cube of these dates as one dataset (empty with `schema` when none)."""
    import pyarrow.dataset as ds

    if not dates:
        return schema.empty_table()
    paths = [cube_file(warehouse, d, fp) for d, fp in sorted(dates.items())]
    filesystem, _ = _fs(paths[0])
    inner = [_fs(p)[1] for p in paths]
    return ds.dataset(inner, filesystem=filesystem, format="parquet", schema=schema)


def prune_cube(warehouse: str, keep: dict[str, str]) -> None:
    """Delete the cache files of dates and fingerprints the record no longer names."""
    from pyarrow import fs

    filesystem, folder = _fs(f"{_meta(warehouse)}/{CUBE_DIR}")
    try:
        infos = filesystem.get_file_info(fs.FileSelector(folder, allow_not_found=True))
    except OSError:
        return
    wanted = {f"{d}-{fp}.parquet" for d, fp in keep.items()}
    for info in infos:
        if info.type == fs.FileType.File and info.base_name not in wanted:
            with contextlib.suppress(OSError):  # else left for the next detect to delete
                filesystem.delete_file(info.path)


def new_state(
    key: str,
    segments: list[tuple[str, str]],
    dates: dict[str, str],
    evidence: dict[str, list[str]],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "key": key,
        "segments": [list(s) for s in segments],
        "dates": dict(sorted(dates.items())),
        "evidence": evidence,
    }


def write_state(warehouse: str, state: dict[str, Any]) -> None:
    from ..warehouse import _write_json

    _write_json(state_location(warehouse), state)
