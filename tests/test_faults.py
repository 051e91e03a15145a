"""Fault injection: the real `funnelpulse` command is killed at every commit boundary, runs out of
disk and races a second writer; after each, exact row counts and a working next command prove that
nothing was lost, nothing doubled and nothing left half done.

Kills use the checkpoints of funnelpulse.faults (the process SIGKILLs itself at the named step);
the full disk is a real tmpfs mounted for the test (needs root, as in CI).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import cli

from funnelpulse import tables
from funnelpulse.dashboard.data import DashboardData
from funnelpulse.errors import WarehouseError
from funnelpulse.ingest import RAW_COLUMNS

pytestmark = pytest.mark.faults

BAD_LINES = 7  # per file: each has an impossible event_time, so it must land in quarantine


def make_csv(path: Path, rows: int, start: str, days: int, seed: int) -> Path:
    """`rows` valid REES46 events over `days` days, plus BAD_LINES lines quarantine must keep."""
    rng = random.Random(seed)
    first = datetime.fromisoformat(start)
    step = days * 86400 / rows
    lines = [",".join(RAW_COLUMNS)]
    kinds = ("view",) * 8 + ("cart", "purchase")
    bad = 0
    for i in range(rows):
        ts = (first + timedelta(seconds=int(i * step))).strftime("%Y-%m-%d %H:%M:%S UTC")
        lines.append(
            f"{ts},{rng.choice(kinds)},{rng.randrange(1, 5000)},{rng.randrange(1, 40)},,"
            f"brand{rng.randrange(30)},{rng.randrange(100, 9000) / 100},{rng.randrange(1, 20000)},"
            f"{uuid.UUID(int=rng.getrandbits(128))}"
        )
        if bad < BAD_LINES and i % (rows // BAD_LINES) == 5:
            lines.append(f"2019-13-45 99:00:00 UTC,view,1,2,,bad,1.0,3,{i}")
            bad += 1
    path.write_text("\n".join(lines) + "\n")
    assert len(lines) == rows + BAD_LINES + 1
    return path


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def rows(warehouse: Path, name: str) -> int:
    path = tables.table_path(str(warehouse), name)
    return tables.dataset(path).count_rows() if tables.exists(path) else 0


def pending(warehouse: Path) -> list[str]:
    folder = warehouse / "_funnelpulse" / "pending"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def uncommitted_files(warehouse: Path) -> list[str]:
    """Data files that no commit of their table mentions (what a failed write leaves behind)."""
    leftovers = []
    for name in tables.ALL_TABLES:
        folder = warehouse / name
        log = folder / "_delta_log"
        if not log.is_dir():
            leftovers += [str(p) for p in folder.rglob("*.parquet")] if folder.is_dir() else []
            continue
        logged = "".join(p.read_text() for p in log.glob("*.json"))
        leftovers += [str(p) for p in folder.rglob("*.parquet") if p.name not in logged]
    return leftovers


def no_jargon(text: str) -> None:
    for word in ("Delta", "Traceback", "Exception", "duckdb", "arrow", "unexpected"):
        assert word not in text, text


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("raw")
    return {
        "oct": make_csv(folder / "oct.csv", 20_000, "2019-10-01", 10, seed=1),
        "nov": make_csv(folder / "nov.csv", 12_000, "2019-11-01", 6, seed=2),
    }


# ------------------------------------------------------------------------------------------
# Kill -9 at each commit boundary of ingest


INGEST_POINTS = (
    "ingest.journal_written",
    "commit.files_written",
    "ingest.bronze_committed",
    "ingest.quarantine_committed",
)


@pytest.mark.parametrize("point", INGEST_POINTS)
def test_ingest_killed_at_each_boundary_is_completed_by_next_command(
    tmp_path: Path, files: dict[str, Path], point: str
) -> None:
    wh = tmp_path / "wh"
    ok(cli(wh, "ingest", str(files["oct"])))
    killed = cli(wh, "ingest", str(files["nov"]), kill_at=point)
    assert killed.returncode == -signal.SIGKILL
    assert pending(wh), "the journal must record the unfinished ingest"

    # A reader never shows the half-written state silently: it says exactly what to run.
    refused = cli(wh, "report")
    assert refused.returncode == 1
    assert f"Run `funnelpulse ingest {files['nov'].resolve()}` to complete it" in refused.stderr
    no_jargon(refused.stderr)

    # The next writing command finishes the ingest (the file is still there, unchanged).
    ok(cli(wh, "build"))
    assert rows(wh, tables.BRONZE) == 20_000 + 12_000
    assert rows(wh, tables.QUARANTINE) == 2 * BAD_LINES
    assert pending(wh) == []
    assert uncommitted_files(wh) == []
    assert rows(wh, tables.SILVER) == 32_000
    assert "2019-11-06" in ok(cli(wh, "report"))

    # Re-running the same ingest afterwards never doubles anything.
    ok(cli(wh, "ingest", str(files["nov"])))
    assert rows(wh, tables.BRONZE) == 32_000
    assert rows(wh, tables.QUARANTINE) == 2 * BAD_LINES


@pytest.mark.spark
def test_spark_ingest_killed_between_its_commits_is_completed_by_next_command(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    pytest.importorskip("pyspark")
    wh = tmp_path / "wh"
    killed = cli(
        wh, "ingest", "--engine", "spark", str(files["oct"]), kill_at="ingest.bronze_committed"
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert rows(wh, tables.BRONZE) == 20_000
    assert rows(wh, tables.QUARANTINE) == 0
    ok(cli(wh, "build"))
    assert rows(wh, tables.BRONZE) == 20_000
    assert rows(wh, tables.QUARANTINE) == BAD_LINES
    assert pending(wh) == []


def test_ingest_killed_then_file_changed_is_undone_and_says_what_to_rerun(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    wh = tmp_path / "wh"
    moving = shutil.copy(files["nov"], tmp_path / "moving.csv")
    ok(cli(wh, "ingest", str(files["oct"])))
    assert cli(wh, "ingest", str(moving), kill_at="ingest.bronze_committed").returncode == -9
    assert rows(wh, tables.BRONZE) == 32_000  # the partial state: bronze without quarantine
    Path(moving).unlink()

    ok(cli(wh, "build"))
    ok(cli(wh, "report"))
    # The unfinished ingest was undone: exactly the state before it.
    assert rows(wh, tables.BRONZE) == 20_000
    assert rows(wh, tables.QUARANTINE) == BAD_LINES
    assert rows(wh, tables.SILVER) == 20_000
    assert pending(wh) == []


def test_undo_warning_names_the_file(tmp_path: Path, files: dict[str, Path]) -> None:
    wh = tmp_path / "wh"
    moving = shutil.copy(files["nov"], tmp_path / "gone.csv")
    assert cli(wh, "ingest", str(moving), kill_at="ingest.bronze_committed").returncode == -9
    Path(moving).unlink()
    result = cli(wh, "ingest", str(files["oct"]))
    ok(result)
    assert f"Run `funnelpulse ingest {Path(moving).resolve()}` to load it" in result.stderr
    assert rows(wh, tables.BRONZE) == 20_000
    assert rows(wh, tables.QUARANTINE) == BAD_LINES


# ------------------------------------------------------------------------------------------
# Kill -9 at each commit boundary of build


BUILD_POINTS = (
    "build.journal_written",
    "build.silver_committed",
    "build.gold_committed",
    "build.all_committed",
)


@pytest.mark.parametrize("point", BUILD_POINTS)
def test_build_killed_at_each_boundary_never_leaves_stale_gold_silently(
    tmp_path: Path, files: dict[str, Path], point: str
) -> None:
    wh = tmp_path / "wh"
    ok(cli(wh, "ingest", str(files["oct"])))
    ok(cli(wh, "build"))
    ok(cli(wh, "ingest", str(files["nov"])))
    assert cli(wh, "build", kill_at=point).returncode == -signal.SIGKILL

    refused = cli(wh, "report")
    assert refused.returncode == 1
    assert "Run `funnelpulse build` to finish it" in refused.stderr
    no_jargon(refused.stderr)
    with pytest.raises(WarehouseError, match="Run `funnelpulse build` to finish it"):
        DashboardData(str(wh)).date_bounds()  # the dashboard refuses stale gold too

    ok(cli(wh, "build"))
    assert pending(wh) == []
    assert uncommitted_files(wh) == []
    assert rows(wh, tables.SILVER) == 32_000
    gold = tables.read(tables.table_path(str(wh), tables.GOLD_DAILY_BRAND))
    silver = tables.read(tables.table_path(str(wh), tables.SILVER))
    assert sum(gold.column("views").to_pylist()) == silver.column("event_type").to_pylist().count(
        "view"
    )
    assert max(gold.column("date").to_pylist()).isoformat() == "2019-11-06"
    ok(cli(wh, "report"))


def test_build_killed_then_narrower_build_still_finishes_the_interrupted_one(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    wh = tmp_path / "wh"
    ok(cli(wh, "ingest", str(files["oct"]), str(files["nov"])))
    assert cli(wh, "build", kill_at="build.silver_committed").returncode == -9
    ok(cli(wh, "build", "--since", "2019-10-02", "--until", "2019-10-03"))
    gold = tables.read(tables.table_path(str(wh), tables.GOLD_DAILY_BRAND))
    assert len({d.isoformat() for d in gold.column("date").to_pylist()}) == 16
    assert pending(wh) == []


# ------------------------------------------------------------------------------------------
# Two writers at once


def _race(warehouse: Path, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if k != "FUNNELPULSE_KILL_AT"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "funnelpulse", "--quiet", "--warehouse", str(warehouse), *c],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for c in commands
    ]
    out = []
    for proc, command in zip(procs, commands, strict=True):
        stdout, stderr = proc.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(command, proc.returncode, stdout, stderr))
    return out


def test_two_concurrent_ingests_of_the_same_new_file_do_not_duplicate(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    wh = tmp_path / "wh"
    for result in _race(wh, ["ingest", str(files["oct"])], ["ingest", str(files["oct"])]):
        ok(result)
        no_jargon(result.stderr)
    assert rows(wh, tables.BRONZE) == 20_000
    assert rows(wh, tables.QUARANTINE) == BAD_LINES
    ok(cli(wh, "build"))
    assert rows(wh, tables.SILVER) == 20_000


def test_concurrent_ingest_of_two_files_and_a_build_keep_every_row(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    wh = tmp_path / "wh"
    ok(cli(wh, "ingest", str(files["oct"])))
    results = _race(wh, ["ingest", str(files["nov"])], ["ingest", str(files["oct"])], ["build"])
    for result in results:
        ok(result)
        no_jargon(result.stderr)
    assert rows(wh, tables.BRONZE) == 32_000
    assert rows(wh, tables.QUARANTINE) == 2 * BAD_LINES
    ok(cli(wh, "build"))
    assert rows(wh, tables.SILVER) == 32_000
    assert pending(wh) == []


def test_a_killed_writer_never_leaves_the_warehouse_locked(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    wh = tmp_path / "wh"
    assert cli(wh, "ingest", str(files["oct"]), kill_at="commit.files_written").returncode == -9
    assert (wh / "_funnelpulse" / "writer.lock").exists()
    ok(cli(wh, "ingest", str(files["nov"]), timeout=120))  # would hang on a stuck lock
    assert rows(wh, tables.BRONZE) == 32_000


# ------------------------------------------------------------------------------------------
# A full disk


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill the disk until only about `leave` bytes are free."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as out:
        out.write(b"\0" * max(free - leave, 0))
    return filler


def test_full_disk_says_so_leaves_no_debris_and_works_once_space_is_freed(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    big = make_csv(tmp_path / "big.csv", 150_000, "2019-10-01", 20, seed=3)
    with tmpfs(tmp_path / "disk", "3m") as disk:
        wh = disk / "wh"
        failed = cli(wh, "ingest", str(big))
        assert failed.returncode == 1, failed.stderr
        assert failed.stderr.startswith("Error: No space left on the disk holding")
        assert "Free some space" in failed.stderr
        no_jargon(failed.stderr)
        assert uncommitted_files(wh) == []
        assert pending(wh) == []
        subprocess.run(["mount", "-o", "remount,size=40m", str(disk)], check=True)
        ok(cli(wh, "ingest", str(big)))
        assert rows(wh, tables.BRONZE) == 150_000
        assert rows(wh, tables.QUARANTINE) == BAD_LINES
        ok(cli(wh, "build"))
        assert rows(wh, tables.SILVER) == 150_000


@pytest.mark.parametrize("free_kib", [4, 8, 16, 64, 256, 1024])
def test_disk_full_at_any_step_is_reported_cleaned_and_recoverable(
    tmp_path: Path, files: dict[str, Path], free_kib: int
) -> None:
    """Whichever write the disk fills at (journal, table log, data files, commit), the user gets
    one `Error:` line, nothing is left half done, and once space is freed the ingest works."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        wh = disk / "wh"
        # the warehouse folder and its lock exist, so only the ingest's own writes need space
        (wh / "_funnelpulse").mkdir(parents=True)
        (wh / "_funnelpulse" / "writer.lock").touch()
        filler = _fill(disk, free_kib * 1024)
        failed = cli(wh, "ingest", str(files["oct"]))
        assert failed.returncode == 1, failed.stderr
        assert failed.stderr.startswith("Error: No space left on the disk holding"), failed.stderr
        no_jargon(failed.stderr)
        filler.unlink()
        assert uncommitted_files(wh) == []
        assert pending(wh) == []
        assert not list(disk.rglob("*.tmp"))
        ok(cli(wh, "ingest", str(files["oct"])))
        assert rows(wh, tables.BRONZE) == 20_000
        assert rows(wh, tables.QUARANTINE) == BAD_LINES
        ok(cli(wh, "build"))
        assert rows(wh, tables.SILVER) == 20_000


def test_a_log_folder_without_a_commit_is_debris_not_a_broken_table(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """What a first commit that failed half way leaves: an empty log folder and a data file."""
    wh = tmp_path / "wh"
    debris = wh / tables.BRONZE / "event_date=2019-10-01"
    debris.mkdir(parents=True)
    (wh / tables.BRONZE / "_delta_log").mkdir()
    shutil.copy(next((Path(__file__).parent).rglob("*.py")), debris / "part-0.parquet")
    report = cli(wh, "report")  # no table, rather than a broken one
    no_jargon(report.stderr)
    assert "bronze_events" not in report.stdout
    build = cli(wh, "build")
    assert build.returncode == 1
    assert "Run `funnelpulse ingest" in build.stderr
    no_jargon(build.stderr)
    ok(cli(wh, "ingest", str(files["oct"])))
    assert not (debris / "part-0.parquet").exists()
    assert rows(wh, tables.BRONZE) == 20_000
    ok(cli(wh, "build"))
    ok(cli(wh, "report"))


def test_killed_write_leftovers_are_removed_and_vacuum_frees_old_versions(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    wh = tmp_path / "wh"
    ok(cli(wh, "ingest", str(files["oct"])))
    assert cli(wh, "ingest", str(files["nov"]), kill_at="commit.files_written").returncode == -9
    assert uncommitted_files(wh), "the killed write should have left its files"
    ok(cli(wh, "ingest", str(files["oct"])))  # replaces oct's rows: old files stay for history
    assert uncommitted_files(wh) == []
    assert rows(wh, tables.BRONZE) == 32_000

    kept = sorted(p.name for p in (wh / tables.BRONZE).rglob("*.parquet"))
    dry = ok(cli(wh, "vacuum", "--dry-run", "--retain-hours", "0"))
    assert "bronze_events: would delete" in dry
    assert sorted(p.name for p in (wh / tables.BRONZE).rglob("*.parquet")) == kept  # dry: kept
    count = int(dry.split("bronze_events: would delete ")[1].split(" ")[0])
    assert count > 0
    done = ok(cli(wh, "vacuum", "--retain-hours", "0"))
    assert f"bronze_events: deleted {count} files" in done
    assert len(list((wh / tables.BRONZE).rglob("*.parquet"))) == len(kept) - count
    assert rows(wh, tables.BRONZE) == 32_000
    assert "would delete 0 files" in ok(cli(wh, "vacuum", "--dry-run", "--retain-hours", "0"))
    ok(cli(wh, "build"))
    assert rows(wh, tables.SILVER) == 32_000
