"""Tables that cannot lie: a damaged log, a bronze that shrank, a lost or corrupted data file.

Each case breaks a real warehouse on disk the way a failing disk or a wrong copy would, runs the
real command, checks it refuses with an `Error:` that names the table and a step, follows that
step literally, and checks the command then succeeds with exact counts.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_faults import BAD_LINES, cli, make_csv, no_jargon, ok, rows

from funnelpulse import build_records, tables
from funnelpulse.pipeline import Pipeline

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A warehouse with two raw files ingested and built, copied fresh for each test."""
    folder = tmp_path_factory.mktemp("built")
    files = {
        "oct": make_csv(folder / "oct.csv", 6_000, "2019-10-01", 4, seed=1),
        "nov": make_csv(folder / "nov.csv", 4_000, "2019-11-01", 3, seed=2),
    }
    wh = folder / "wh"
    ok(cli(wh, "ingest", str(files["oct"])))
    ok(cli(wh, "ingest", str(files["nov"])))
    ok(cli(wh, "build"))
    return {**files, "wh": wh}


@pytest.fixture
def wh(tmp_path: Path, built: dict[str, Path]) -> Path:
    copy = tmp_path / "wh"
    shutil.copytree(built["wh"], copy)
    return copy


def newest_commit(wh: Path, name: str) -> Path:
    return sorted((wh / name / "_delta_log").glob("*.json"))[-1]


def damage(commit: Path, how: str) -> None:
    size = commit.stat().st_size
    with open(commit, "r+b") as handle:
        handle.truncate(0 if how == "empty" else size // 2)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, result.stderr + result.stdout
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    no_jargon(result.stderr)
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def quoted_commands(message: str) -> list[str]:
    return re.findall(r"`([^`]+)`", message)


@pytest.mark.parametrize("how", ["empty", "half"])
def test_a_damaged_newest_commit_of_silver_is_an_error_and_build_repairs_it(
    wh: Path, how: str
) -> None:
    damage(newest_commit(wh, tables.SILVER), how)
    for command in (["report"], ["funnel"], ["detect"], ["build", "--since", "2019-10-02"]):
        message = refused(cli(wh, *command), "silver_events", "is damaged")
        assert quoted_commands(message) == ["funnelpulse build"], message
    # The advice, literally: then every reader works again, with the real counts.
    built = ok(cli(wh, "build"))
    assert "silver_events: 10,000 rows" in built
    report = ok(cli(wh, "report"))
    assert re.search(r"silver_events\s+10,000", report), report
    assert "sessions" in ok(cli(wh, "funnel"))
    ok(cli(wh, "detect"))
    assert rows(wh, tables.SILVER) == 10_000


@pytest.mark.parametrize("how", ["empty", "half"])
def test_a_damaged_newest_commit_of_bronze_never_builds_an_empty_warehouse(
    wh: Path, built: dict[str, Path], how: str
) -> None:
    damage(newest_commit(wh, tables.BRONZE), how)
    message = refused(cli(wh, "build"), "bronze_events", "is damaged")
    assert rows(wh, tables.SILVER) == 10_000  # nothing was replaced
    assert refused(cli(wh, "report"), "bronze_events", "is damaged") == message
    # The advice names the file to set aside and the raw file whose rows that change held.
    move, ingest = quoted_commands(message)
    assert move.startswith("mv ") and move.endswith(".damaged")
    assert ingest == f"funnelpulse ingest {shlex.quote(str(built['nov'].resolve()))}"
    subprocess.run(move, shell=True, check=True)
    assert rows(wh, tables.BRONZE) == 6_000  # as it was before the damaged change
    ok(cli(wh, *shlex.split(ingest)[1:]))
    assert rows(wh, tables.BRONZE) == 10_000
    assert rows(wh, tables.QUARANTINE) == 2 * BAD_LINES
    ok(cli(wh, "build"))
    assert rows(wh, tables.SILVER) == 10_000
    ok(cli(wh, "report"))


@pytest.mark.parametrize("damaged", [False, True])
def test_a_full_build_sets_aside_and_checks_bronze_once(
    wh: Path, monkeypatch: pytest.MonkeyPatch, damaged: bool
) -> None:
    """The checks before a full build (a damaged newest change of a built table set aside, bronze
    against the last build's record) run once each, not again inside the journaled step."""
    if damaged:
        damage(newest_commit(wh, tables.SILVER), "half")
    calls: Counter[str] = Counter()

    def counted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(tables, "set_aside", counted("set_aside", tables.set_aside))
    monkeypatch.setattr(
        build_records, "bronze_state", counted("bronze_state", build_records.bronze_state)
    )
    monkeypatch.setattr(
        build_records, "check_bronze", counted("check_bronze", build_records.check_bronze)
    )
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        result = Pipeline(warehouse=str(wh)).build(full=True)
    assert calls == {
        "set_aside": len(tables.BUILT_TABLES),
        "bronze_state": 1,
        "check_bronze": 1,
    }
    assert result.rows[tables.SILVER] == rows(wh, tables.SILVER) == 10_000
    assert len(list((wh / tables.SILVER / "_delta_log").glob("*.damaged"))) == int(damaged)


def test_build_refuses_a_bronze_that_lost_rows_no_commit_removed(
    wh: Path, built: dict[str, Path]
) -> None:
    # The log goes back one version (a restore of an old copy of the folder, say): the bronze
    # that reads now lacks nov's 4,000 rows, and no commit removed them.
    newest_commit(wh, tables.BRONZE).unlink()
    assert rows(wh, tables.BRONZE) == 6_000
    message = refused(cli(wh, "build"), "bronze_events has 6,000 rows", "read 10,000")
    assert rows(wh, tables.SILVER) == 10_000  # silver and gold untouched
    refused(cli(wh, "build", "--since", "2019-11-01"), "bronze_events has 6,000 rows")
    assert "funnelpulse build --allow-shrink" in quoted_commands(message)
    # Re-ingesting the missing file makes the build work (the first step the error gives).
    ok(cli(wh, "ingest", str(built["nov"])))
    ok(cli(wh, "build"))
    assert rows(wh, tables.SILVER) == 10_000


def test_build_accepts_rows_removed_by_a_commit_and_allow_shrink_when_on_purpose(
    wh: Path, built: dict[str, Path], tmp_path: Path
) -> None:
    # A re-ingest of a file with fewer rows is a commit that removes rows: not a loss.
    raw = tmp_path / "nov.csv"
    shutil.copy(built["nov"], raw)
    ok(cli(wh, "ingest", str(raw)))  # nov's events under another name: they replace nov's rows
    assert rows(wh, tables.BRONZE) == 10_000
    make_csv(raw, 1_000, "2019-11-01", 3, seed=5)
    ok(cli(wh, "ingest", str(raw)))  # the file now holds 1,000 rows: they replace its 4,000
    assert rows(wh, tables.BRONZE) == 7_000
    ok(cli(wh, "build"))
    assert rows(wh, tables.SILVER) == 7_000
    # bronze recreated from one file on purpose: refused, then accepted with the flag.
    shutil.rmtree(wh / tables.BRONZE)
    ok(cli(wh, "ingest", str(built["oct"])))
    message = refused(cli(wh, "build"), "bronze_events has 6,000 rows", "read 7,000")
    assert "no longer in the table's history" in message
    assert rows(wh, tables.SILVER) == 7_000
    ok(cli(wh, "build", "--allow-shrink"))
    assert rows(wh, tables.SILVER) == 6_000
    ok(cli(wh, "build"))  # the new record is the base
    assert rows(wh, tables.SILVER) == 6_000


def data_file(wh: Path, name: str, day: str) -> Path:
    return next((wh / name).glob(f"*={day}/*.parquet"))


@pytest.mark.parametrize("how", ["deleted", "corrupted"])
def test_a_lost_data_file_of_a_built_table_says_run_build(wh: Path, how: str) -> None:
    file = data_file(wh, tables.SILVER, "2019-10-02")
    if how == "deleted":
        file.unlink()
    else:  # same size, garbage inside (a bad sector, a copy gone wrong)
        file.write_bytes(b"\0" * file.stat().st_size)
    for command in (["report"], ["funnel"], ["detect"]):
        message = refused(cli(wh, *command), "Table silver_events has 1 data file(s)", file.name)
        assert quoted_commands(message) == ["funnelpulse build --full"], message
    ok(cli(wh, "build", "--full"))
    assert rows(wh, tables.SILVER) == 10_000
    ok(cli(wh, "report"))
    ok(cli(wh, "funnel"))


def test_a_lost_data_file_of_bronze_names_the_raw_file_to_ingest_again(
    wh: Path, built: dict[str, Path]
) -> None:
    data_file(wh, tables.BRONZE, "2019-11-02").unlink()
    message = refused(cli(wh, "build"), "Table bronze_events has 1 data file(s)")
    assert rows(wh, tables.SILVER) == 10_000  # nothing replaced
    (command,) = quoted_commands(message)
    assert command == f"funnelpulse ingest {shlex.quote(str(built['nov'].resolve()))}"
    ok(cli(wh, *shlex.split(command)[1:]))
    assert rows(wh, tables.BRONZE) == 10_000
    ok(cli(wh, "build"))
    assert rows(wh, tables.SILVER) == 10_000


# ------------------------------------------------------------------------------------------
# Recoverable states exit 1 with what to do (exit 3 is left to real bugs)


def test_recoverable_states_exit_1_with_what_to_do(tmp_path: Path, built: dict[str, Path]) -> None:
    """Walks a read-only warehouse (funnel, stream), a full disk under the stream and a second
    stream on the same warehouse: each exits 1 with one `Error:` line saying what to do, and
    the command works once that is done."""
    import os
    import sys
    import time

    from test_faults import _fill, tmpfs

    landing = tmp_path / "landing"
    landing.mkdir()
    shutil.copy(built["oct"], landing / "oct.csv")
    stream = ["stream", "--source", f"files://{landing}", "--until-idle", "1"]
    with tmpfs(tmp_path / "disk", "40m") as disk:
        wh = disk / "wh"
        shutil.copytree(built["wh"], wh)
        # Read-only: the funnel reads (its spill goes elsewhere); the stream says what it needs.
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        try:
            assert "sessions" in ok(cli(wh, "funnel", "--by", "brand"))
            refused(cli(wh, *stream), "Read-only file system", "give a writable --warehouse")
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)

        # A full disk under the stream: exit 1, and once space is freed the same command works.
        filler = _fill(disk, 96 * 1024)
        refused(cli(wh, *stream), "No space left on the disk holding", "re-run the same command")
        filler.unlink()
        assert "6,007 events in" in ok(cli(wh, *stream, timeout=180))
        assert rows(wh, tables.GOLD_STREAM) > 0

        # A second stream on the same warehouse is refused at once, naming the first.
        (landing / "more").mkdir()
        first = subprocess.Popen(
            [sys.executable, "-m", "funnelpulse", "-q", "--warehouse", str(wh), *stream[:3]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            lock = wh / "_funnelpulse" / "stream.lock"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                not lock.exists() or f'"pid": {first.pid}' not in lock.read_text()
            ):
                time.sleep(0.2)
            second = refused(cli(wh, *stream), "is already streaming into this warehouse")
            assert f"(pid {first.pid})" in second
        finally:
            first.send_signal(2)
            out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert "Stream stopped" in out
        assert os.path.exists(lock)
        ok(cli(wh, *stream))  # the first one stopped: a new stream runs


# ------------------------------------------------------------------------------------------
# Bounded waits: an object store that cannot be reached (no network, no credentials here)


def test_an_unreachable_object_store_is_an_error_within_30_s_and_ctrl_c_stops_it() -> None:
    import signal
    import sys
    import time

    command = [
        sys.executable,
        "-m",
        "funnelpulse",
        "--warehouse",
        "gs://bucket-that-does-not-exist/wh",
        "report",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    refused(result, "Cannot reach the warehouse at gs://bucket-that-does-not-exist/wh")

    stopped = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # well inside the wait for the store
    asked = time.monotonic()
    stopped.send_signal(signal.SIGINT)
    _, err = stopped.communicate(timeout=60)
    # Stopped (130; or killed by the signal when it came while Python was still importing).
    assert stopped.returncode in (130, -signal.SIGINT), err
    assert time.monotonic() - asked < 15  # at most the grace the watcher gives a clean stop
    assert "Aborted." in err, err
