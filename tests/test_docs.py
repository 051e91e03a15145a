"""The README's command table and the CLI's --help stay in step (every command, every flag)."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from funnelpulse.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_commands() -> dict[str, set[str]]:
    """Each command in the README's table with the flags its rows mention."""
    flags: dict[str, set[str]] = {}
    for line in README.read_text().splitlines():
        match = re.match(r"\| `funnelpulse ([a-z-]+)([^`]*)`", line)
        if match:
            flags.setdefault(match.group(1), set()).update(
                re.findall(r"--[a-z][a-z-]*", match.group(2))
            )
    return flags


def own_flags(command: click.Command) -> set[str]:
    return {
        opt
        for param in command.params
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--") and opt != "--help"
    }


def cli_flags(command: click.Command) -> set[str]:
    """The command's flags; a group's are those of its subcommands (`incidents list --format`)."""
    own = own_flags(command)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            own |= cli_flags(sub)
    return own


def test_every_command_is_in_the_readme_table_and_back() -> None:
    documented = documented_commands()
    assert set(documented) == set(cli.commands), (
        f"only in README: {sorted(set(documented) - set(cli.commands))}; "
        f"only in the CLI: {sorted(set(cli.commands) - set(documented))}"
    )


def test_every_flag_in_the_readme_table_exists() -> None:
    for name, flags in documented_commands().items():
        missing = flags - cli_flags(cli.commands[name])
        assert not missing, f"README documents {sorted(missing)} for `{name}`, --help has not"


def test_every_command_has_help_in_process() -> None:
    runner = CliRunner()
    for name, command in cli.commands.items():
        done = runner.invoke(cli, [name, "--help"])
        assert done.exit_code == 0, (name, done.output)
        assert f"Usage: cli {name}" in done.output or f"{name} [OPTIONS]" in done.output
        for flag in own_flags(command):
            assert flag in done.output, (name, flag)
        for sub_name, sub in getattr(command, "commands", {}).items():
            sub_help = runner.invoke(cli, [name, sub_name, "--help"])
            assert sub_help.exit_code == 0 and all(f in sub_help.output for f in own_flags(sub))
