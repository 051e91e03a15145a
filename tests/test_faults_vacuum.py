"""`vacuum` beside running processes: a writer between writing its files and committing them, a
reader holding an older version, a real embedded stream with `vacuum --retain-hours 0` run in a
loop beside it, and `stream --repair` after a live table lost a data file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_live_equals_batch, fp
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import AddAction

from funnelpulse import Pipeline, generate_events, tables, write_events
from funnelpulse.running import Registration, live_claims

pytestmark = [pytest.mark.faults]


def _vacuum(warehouse: Path) -> subprocess.CompletedProcess[str]:
    return fp("--warehouse", str(warehouse), "vacuum", "--retain-hours", "0")


def _half_written(path: str) -> str:
    """Write a data file into the table the way a MERGE does before its commit; its name."""
    name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
    pq.write_table(pa.table({"n": pa.array([10, 11, 12], pa.int64())}), Path(path, name))
    return name


def _commit(path: str, name: str) -> None:
    """The commit that names the file written by `_half_written`."""
    size = Path(path, name).stat().st_size
    action = AddAction(name, size, {}, int(time.time() * 1000), True, "{}")
    DeltaTable(path).create_write_transaction(
        [action], mode="append", schema=pa.schema([("n", pa.int64())])
    )


def test_vacuum_keeps_the_files_a_running_writer_has_not_committed_yet(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    path = tables.table_path(str(wh), tables.GOLD_STREAM_BUCKETS)
    write_deltalake(path, pa.table({"n": pa.array([1, 2], pa.int64())}))

    # Unregistered (what every writer was before): vacuum takes the file, the commit then names
    # a file that is gone, and the table cannot be read again.
    lost = _half_written(path)
    assert _vacuum(wh).returncode == 0
    assert not Path(path, lost).exists()

    # A registered writer, busy between its files and its commit: vacuum keeps them and does
    # not wait; the commit then makes a whole table.
    with Registration(str(wh), "stream") as beat, beat.busy():
        name = _half_written(path)
        started = time.monotonic()
        done = _vacuum(wh)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 60  # it never waits for the writer to end
        assert Path(path, name).exists()
        _commit(path, name)
    assert sorted(DeltaTable(path).to_pyarrow_table().column("n").to_pylist()) == [1, 2, 10, 11, 12]
    assert live_claims(str(wh)) == []  # the heartbeat went with the work


def test_vacuum_keeps_the_version_a_running_reader_started_from(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    path = tables.table_path(str(wh), tables.GOLD_STREAM)
    write_deltalake(path, pa.table({"n": pa.array([1, 2], pa.int64())}))
    with Registration(str(wh), "reader") as beat, beat.busy():
        reading = DeltaTable(path)  # the reader holds version 0 ...
        time.sleep(2.5)  # ... (file times are compared with a slack of 2 s)
        write_deltalake(path, pa.table({"n": pa.array([3], pa.int64())}), mode="overwrite")
        assert _vacuum(wh).returncode == 0
        # ... and can still read all of it after an overwrite and a vacuum with no retention
        assert sorted(reading.to_pyarrow_table().column("n").to_pylist()) == [1, 2]
    # once the reader is done, the next vacuum frees the old version's file
    old_files = set(os.listdir(path)) - {"_delta_log"}
    assert _vacuum(wh).returncode == 0
    assert len(set(os.listdir(path)) - {"_delta_log"}) == len(old_files) - 1
    assert DeltaTable(path).to_pyarrow_table().column("n").to_pylist() == [3]


def test_a_dead_writers_heartbeat_protects_nothing(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    path = tables.table_path(str(wh), tables.GOLD_STREAM_BUCKETS)
    write_deltalake(path, pa.table({"n": pa.array([1], pa.int64())}))
    debris = _half_written(path)
    # a heartbeat left by a process killed with SIGKILL while busy
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    folder = wh / "_funnelpulse" / "running"
    folder.mkdir(parents=True)
    (folder / "stream-1.json").write_text(
        json.dumps(
            {
                "pid": int(proc.stdout),
                "host": os.uname().nodename,
                "role": "stream",
                "busy_since": time.time() - 60,
                "beat_at": time.time(),
            }
        )
    )
    assert _vacuum(wh).returncode == 0
    assert not Path(path, debris).exists()
    assert not (folder / "stream-1.json").exists()


def _chunks(tmp_path: Path, files: int, rows: int) -> tuple[Path, list[Path]]:
    """Events of 3 days in `files` CSV files in time order, and their batch warehouse built."""
    events = generate_events(rows, seed=11, days=3, brands=12)
    order = pa.compute.sort_indices(events, [("event_time", "ascending")])
    events = events.take(order)
    stage = tmp_path / "stage"
    stage.mkdir()
    parts = []
    step = -(-rows // files)
    for i in range(files):
        part = stage / f"part{i:03d}.csv"
        write_events(events.slice(i * step, step), part)
        parts.append(part)
    return stage, parts


@pytest.mark.slow
def test_vacuum_in_a_loop_beside_a_running_stream_keeps_it_going_and_exact(
    tmp_path: Path,
) -> None:
    _, parts = _chunks(tmp_path, files=30, rows=30_000)
    batch = Pipeline(warehouse=str(tmp_path / "batch"))
    batch.ingest(parts)
    batch.build()
    inbox = tmp_path / "in"
    inbox.mkdir()
    wh = tmp_path / "live"
    stream = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "funnelpulse",
            "--warehouse",
            str(wh),
            "stream",
            "--source",
            f"files://{inbox}",
            "--until-idle",
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def feed() -> None:
        for part in parts:  # one file at a time, written then renamed as the README asks
            shutil.copy(part, inbox / f".{part.name}.tmp")
            os.rename(inbox / f".{part.name}.tmp", inbox / part.name)
            time.sleep(0.3)

    feeder = threading.Thread(target=feed)
    feeder.start()
    # vacuum with no retention, over and over, in its own process (a CLI start costs seconds
    # on a loaded machine; this runs the same vacuum many more times)
    stop = tmp_path / "stop"
    looping = subprocess.Popen(
        [sys.executable, "-c", VACUUM_LOOP, str(wh), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = stream.communicate(timeout=600)
    finally:
        feeder.join()
        stop.write_text("")
        loop_out, loop_err = looping.communicate(timeout=300)
    assert stream.returncode == 0, err[-3000:]
    assert "30,000 events in" in out, out
    assert looping.returncode == 0, loop_err[-3000:]
    vacuums, deleted = (int(n) for n in loop_out.split())
    assert vacuums >= 10, loop_out
    assert live_claims(str(wh)) == []
    # a last vacuum with no retention (the CLI) frees what is left, and the table stays whole
    final = _vacuum(wh)
    assert final.returncode == 0
    assert deleted + sum(int(n) for n in _deleted_counts(final.stdout)) > 0
    assert_live_equals_batch(_with_live(batch, wh))


VACUUM_LOOP = """
import sys, time
from pathlib import Path
from funnelpulse import Pipeline, tables
wh, stop = sys.argv[1], Path(sys.argv[2])
p = Pipeline(warehouse=wh)
vacuums = deleted = 0
while not stop.exists():
    if tables.is_delta(tables.table_path(wh, tables.GOLD_STREAM)):
        found = p.vacuum(0)
        vacuums += 1
        deleted += sum(n for n, _ in found.values())
    else:
        time.sleep(0.1)
print(vacuums, deleted)
"""


def _deleted_counts(text: str) -> list[str]:
    import re

    return re.findall(r"(\d+) files?", text.replace(",", ""))


def _with_live(batch: Pipeline, live: Path) -> Pipeline:
    target = Path(batch.warehouse, tables.GOLD_STREAM)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(live, tables.GOLD_STREAM), target)
    return batch


@pytest.mark.slow
def test_a_live_table_missing_a_data_file_is_repaired_by_stream_repair(tmp_path: Path) -> None:
    stage, parts = _chunks(tmp_path, files=6, rows=12_000)
    batch = Pipeline(warehouse=str(tmp_path / "batch"))
    batch.ingest(parts)
    batch.build()
    wh = tmp_path / "live"
    source = f"files://{stage}"
    first = fp("--warehouse", str(wh), "stream", "--source", source, "--until-idle", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    # break it: a data file the newest version of the buckets table names is gone
    buckets = tables.table_path(str(wh), tables.GOLD_STREAM_BUCKETS)
    named = DeltaTable(buckets).file_uris()
    os.remove(named[0].removeprefix("file://"))
    broken = fp("--warehouse", str(wh), "stream", "--source", source, "--until-idle", "2")
    assert broken.returncode == 1, broken.stderr[-2000:]
    assert "Error: A data file of gold_stream_funnel_buckets (part-" in broken.stderr
    assert "is missing" in broken.stderr and "Traceback" not in broken.stderr
    assert f"funnelpulse stream --source {source} --repair" in broken.stderr
    # the advice, followed: the stream starts over from its source and counts are exact
    repaired = fp(
        "--warehouse", str(wh), "stream", "--source", source, "--until-idle", "2", "--repair"
    )
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert "12,000 events in" in repaired.stdout
    assert_live_equals_batch(_with_live(batch, wh))
    # the buckets are whole again: their brand totals equal batch gold's
    assert _brand_totals(DeltaTable(buckets).to_pyarrow_table(), "dimension") == _brand_totals(
        batch.table(tables.GOLD_HOURLY_BRAND), None
    )
    # and a restart after the repair goes on from where it stopped (nothing counted twice)
    again = fp("--warehouse", str(wh), "stream", "--source", source, "--until-idle", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert " 0 events in" in again.stdout, again.stdout
    assert_live_equals_batch(_with_live(batch, wh))


def _brand_totals(table: pa.Table, dimension: str | None) -> tuple[int, int, int]:
    rows = table.to_pylist()
    if dimension:
        rows = [r for r in rows if r[dimension] == "brand"]
    return tuple(sum(r[c] for r in rows) for c in ("views", "carts", "purchases"))  # type: ignore[return-value]
