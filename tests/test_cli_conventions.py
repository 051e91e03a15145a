"""One convention for every command's errors, walked over the whole command group.

- A bad command line (unknown flag, malformed value, conflicting flags, missing argument) exits 2
  with one `Error:` line that ends `See `funnelpulse CMD --help`.`, and does nothing (no warehouse
  folder is created).
- Every hint that names a command names one that exists, with flags it has.
- A damaged table exits 1 and says which table and file and what to run, in the product's words.

The command list comes from the click group itself: a new command without error cases here fails
`test_every_command_has_error_cases`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from conftest import row, write_csv

from funnelpulse import Pipeline, tables
from funnelpulse.cli import cli


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))


ALL_COMMANDS = [" ".join(p) for p in _walk(cli)]

# Per command: bad command lines (args after the command's name) and a phrase of the error.
FLAG_ERRORS: dict[str, list[tuple[list[str], str]]] = {
    "annotate": [
        (["--start", "yesterday"], "is not a time"),
        (["--start", "2019-10-10T08:00", "--end", "2019-10-10T07:00", "x"], "is not after --start"),
        (
            ["--start", "2019-10-10T08:00", "--end", "2019-10-10T09:00", "--segment", "acme", "x"],
            "is not a segment",
        ),
        (["--start", "2019-10-10T08:00"], "Give --start, --end and a text"),
    ],
    "api": [(["--port", "0"], "Invalid value for '--port'")],
    "broker": [
        (["--port", "70000"], "Invalid value for '--port'"),
        (["--partitions", "0"], "Invalid value for '--partitions'"),
    ],
    "build": [
        (["--since", "2019-12-01", "--until", "2019-10-01"], "is after --until"),
        (["--full", "--since", "2019-10-01"], "--full rebuilds every date"),
        (["--since", "10/01/2019"], "is not a date"),
        (["--engine", "pandas"], "Invalid value for '--engine'"),
    ],
    "dashboard": [(["--port", "0"], "Invalid value for '--port'")],
    "serve": [
        (["--log-format", "xml"], "Invalid value for '--log-format'"),
        (["--dashboard-port", "-1"], "Invalid value for '--dashboard-port'"),
    ],
    "demo": [
        (["--live-ish"], "No such option"),
        (["--seconds", "30"], "go with --live"),
        (["--live", "--seconds", "5"], "Invalid value for '--seconds'"),
    ],
    "detect": [
        (["--since", "2019-13-01"], "is not a date"),
        (["--method", "magic"], "Invalid value for '--method'"),
        (["--sink", "pager"], "Invalid value for '--sink'"),
    ],
    "digest": [(["--date", "tomorrow"], "is not a date")],
    "evaluate": [([], "Missing option '--labels'")],
    "explain": [([], "Missing argument 'ANOMALY_ID'")],
    "funnel": [
        (["--since", "2019-12-01", "--until", "2019-10-01"], "is after --until"),
        (["--since", "bad"], "is not a date"),
        (["--window", "90"], "--window '90' is not a duration"),
        (["--by", "colour"], "Invalid value for '--by'"),
    ],
    "generate": [
        (["--rows", "10", "--out", "x.txt"], "must end in .csv"),
        (["--rows", "10", "--out", "x.csv", "--inject", "some"], "neither auto:N nor a labels"),
        (["--rows", "0", "--out", "x.csv"], "Invalid value for '--rows'"),
    ],
    "incidents": [(["close"], "No such command 'close'")],
    "incidents ack": [([], "Missing argument 'INCIDENT_ID'")],
    "incidents list": [(["--format", "xml"], "Invalid value for '--format'")],
    "incidents mute": [
        (["--segment", "acme", "--for", "2h"], "must be written dimension:value"),
        (["--segment", "brand:acme", "--for", "2x"], "is not a duration"),
    ],
    "incidents resolve": [([], "Missing argument 'INCIDENT_ID'")],
    "incidents routes": [([], "Missing option '--explain'")],
    "incidents show": [([], "Missing argument 'INCIDENT_ID'")],
    "incidents unmute": [(["--segment", "acme"], "must be written dimension:value")],
    "ingest": [
        ([], "Give one or more CSV, CSV.gz or Parquet files"),
        (["--engine", "pandas", "x.csv"], "Invalid value for '--engine'"),
    ],
    "replay": [
        (["--to", "localhost:9092"], "is not a Kafka address"),
        (["--to", "kafka://h:1/t", "--speedup", "-1"], "Invalid value for '--speedup'"),
        (["--to", "kafka://h:1/t", "--speedup", "nan"], "is not a finite number"),
    ],
    "report": [
        (["--since", "2019-12-01", "--until", "2019-10-01"], "is after --until"),
        (["--top", "0"], "Invalid value for '--top'"),
    ],
    "sql": [
        ([], "Missing argument 'STATEMENT'"),
        (["select 1", "--max-rows", "0"], "Invalid value for '--max-rows'"),
    ],
    "sql-server": [(["--timeout-s", "0"], "Invalid value for '--timeout-s'")],
    "stream": [
        (["--source", "s3://bucket/x"], "Unknown source 's3://bucket/x'"),
        (["--source", "kafka://localhost"], "is not a Kafka address"),
        (["--source", "files://"], "names no folder"),
        (["--source", "files://x", "--until-idle", "inf"], "is not a finite number"),
    ],
    "vacuum": [(["--retain-hours", "-1"], "Invalid value for '--retain-hours'")],
}

# Commands (as written in a hint) -> True; `funnelpulse X Y --flag` must name a real command.
_HINT = re.compile(r"`funnelpulse ([^`]+)`")


def _check_hints(message: str) -> None:
    """Every `funnelpulse ...` a message names is a command that exists, with its flags."""
    for hint in _HINT.findall(message):
        words = hint.split()
        command: click.Command = cli
        path = []
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            found = command.get_command(click.Context(command), words[0])
            assert found is not None, f"the hint `funnelpulse {hint}` names no command"
            path.append(words.pop(0))
            command = found
        flags = {"--help", *(o for p in command.params for o in (*p.opts, *p.secondary_opts))}
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in flags, f"`funnelpulse {hint}`: no flag {word}"


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    for name in list(os.environ):
        if name.startswith("FUNNELPULSE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args))


def test_every_command_has_error_cases() -> None:
    missing = [c for c in ALL_COMMANDS if c not in FLAG_ERRORS]
    assert not missing, f"add bad command lines for {missing} to FLAG_ERRORS"
    assert len(ALL_COMMANDS) >= 25  # the walk found the subcommands too


@pytest.mark.parametrize(
    ("command", "args", "phrase"),
    [(c, a, p) for c, cases in sorted(FLAG_ERRORS.items()) for a, p in cases],
)
def test_a_bad_command_line_exits_2_with_see_help(
    invoke: Callable[..., Result], tmp_path: Path, command: str, args: list[str], phrase: str
) -> None:
    warehouse = tmp_path / "wh"
    result = invoke("--warehouse", str(warehouse), *command.split(), *args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert phrase in lines[0], lines[0]
    assert lines[0].endswith(f"See `funnelpulse {command} --help`."), lines[0]
    assert "Traceback" not in result.output
    assert not warehouse.exists()  # refused before any work
    _check_hints(lines[0])


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_an_unknown_flag_exits_2_everywhere(invoke: Callable[..., Result], command: str) -> None:
    result = invoke(*command.split(), "--no-such-flag")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"Error: No such option '--no-such-flag'. See `funnelpulse {command} --help`."
    )


# --- errors that are not about the command line: exit 1, with a hint that exists ------------


@pytest.fixture(scope="module")
def _built_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("built")
    src = write_csv(
        folder / "a.csv",
        [
            row(f"2019-10-0{d} 10:00:0{s}", etype=e)
            for d in (1, 2)
            for s, e in enumerate(("view", "cart", "purchase"))
        ],
    )
    p = Pipeline(warehouse=str(folder / "wh"))
    p.ingest([src])
    p.build()
    return folder / "wh"


@pytest.fixture
def built(tmp_path: Path, _built_once: Path) -> Pipeline:
    """A built warehouse of the test's own (a copy of one build: the tests damage and write it)."""
    shutil.copytree(_built_once, tmp_path / "wh")
    return Pipeline(warehouse=str(tmp_path / "wh"))


def test_explain_of_an_unknown_id_points_at_a_command_that_lists_ids(
    invoke: Callable[..., Result], built: Pipeline
) -> None:
    assert invoke("--warehouse", built.warehouse, "detect").exit_code == 0
    result = invoke("--warehouse", built.warehouse, "explain", "nonexist")
    assert result.exit_code == 1
    assert "No anomaly or incident with id 'nonexist'" in result.stderr
    assert "`funnelpulse incidents list`" in result.stderr
    _check_hints(result.stderr)
    listed = invoke("--warehouse", built.warehouse, "incidents", "list")
    assert listed.exit_code == 0  # the command the hint names runs


def test_a_funnel_range_without_data_says_so(
    invoke: Callable[..., Result], built: Pipeline
) -> None:
    result = invoke(
        "--warehouse", built.warehouse, "funnel", "--since", "2019-11-05", "--until", "2019-11-06"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(
        "Ordered funnel view -> cart -> purchase, sessions by entry date 2019-11-05 to 2019-11-06"
    )
    assert (
        "No sessions entered in this range: the warehouse has events from 2019-10-01 to 2019-10-02"
        in result.stdout
    )
    whole = invoke("--warehouse", built.warehouse, "funnel")
    assert "by entry date 2019-10-01 to 2019-10-02," in whole.stdout.splitlines()[0]
    assert "No sessions entered" not in whole.stdout


@pytest.mark.parametrize(
    "args", [["report"], ["funnel"], ["sql", "select count(*) from silver_events"]]
)
def test_a_damaged_table_exits_1_with_what_to_run(
    invoke: Callable[..., Result], built: Pipeline, args: list[str]
) -> None:
    silver = Path(tables.table_path(built.warehouse, tables.SILVER))
    damaged = sorted(silver.rglob("*.parquet"))[0]
    damaged.write_bytes(b"not parquet at all")
    result = invoke("--warehouse", built.warehouse, *args)
    assert result.exit_code == 1, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: Table silver_events has 1 data file(s) missing or corrupted")
    assert damaged.name in message and "`funnelpulse build --full`" in message
    for jargon in ("Arrow", "Parquet magic", "parquet input source", "DuckDB", "Delta"):
        assert jargon not in message
    _check_hints(message)
    assert (
        invoke("--warehouse", built.warehouse, "build", "--full").exit_code == 0
    )  # the advice works
    assert invoke("--warehouse", built.warehouse, *args).exit_code == 0


def test_broker_on_a_busy_port_exits_1(invoke: Callable[..., Result]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("broker", "--port", str(port))
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"Error: Port {port} is already in use (something listens there). Stop what listens "
        "there, or give another --port"
    )
    assert "Ctrl-C" not in result.stdout


def test_detect_lists_one_line_per_finding_with_its_span(invoke: Callable[..., Result]) -> None:
    from datetime import UTC, datetime, timedelta

    from funnelpulse.report import format_detect

    start = datetime(2019, 10, 14, 10, tzinfo=UTC)

    def anomaly(i: int, hours: int, z: float, segment: str = "all") -> dict[str, object]:
        return {
            "anomaly_id": f"id{i}{segment}",
            "window_start": start + timedelta(hours=i),
            "window_end": start + timedelta(hours=i + hours),
            "window_hours": hours,
            "severity": "critical",
            "dimension": "shop" if segment == "all" else "price_band",
            "segment": segment,
            "step": "traffic",
            "type": "traffic_drop",
            "observed_rate": 141.0,
            "expected_rate": 1652.4,
            "z": z,
        }

    # one outage scored in three overlapping windows, and one in a long-named segment
    rows = [
        anomaly(0, 1, -5.0),
        anomaly(0, 4, -10.1),
        anomaly(2, 3, -7.0),
        anomaly(1, 2, -4.0, "60_plus_and_a_long_name"),
    ]
    text = format_detect(rows, "seasonal", 3, 24)
    lines = text.splitlines()
    assert lines[0] == "4 anomalies (seasonal) over 3 segments x 24 hours, 2 distinct findings"
    table = lines[2:]
    assert len(table) == 3  # header and one line per finding
    assert "traffic traffic" not in text
    assert table[1].split()[:8] == [
        "id0all",
        "2019-10-14",
        "10:00",
        "5",
        "h",
        "critical",
        "shop:all",
        "traffic",
    ]
    assert "141 views vs 1,652 expected in 4 h (z -10.1)" in table[1]
    # aligned: every row's segment column starts where the header's does
    column = table[0].index("segment")
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in table)
    assert table[2][column:].startswith("price_band:60_plus_and_a_long_name  traffic drop")


def test_a_ctrl_c_landing_inside_the_progress_spinner_is_still_a_ctrl_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The display library is not interrupt-safe: a Ctrl-C halfway through starting a spinner
    left it so that stopping it raised IndexError, and the user saw `unexpected IndexError`
    (exit 3) instead of what was published (exit 130). Here the interrupt lands exactly there."""
    from rich.console import Console

    from funnelpulse.console import progress

    def interrupted(self: Console, hook: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Console, "push_render_hook", interrupted)
    with pytest.raises(KeyboardInterrupt), progress(quiet=False) as shown:
        shown.step("Publishing")
