"""The README's "The first hour" walkthrough, followed command by command as a new user would
(each `funnelpulse ...` line run in order from one folder, each must exit 0), and the demo output
the README shows equals what `demo` prints."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.slow


def walkthrough() -> list[list[str]]:
    text = README.read_text()
    section = text.split("\n## The first hour\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the first-hour section has no bash block"
    commands = [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]
    assert commands and all(c[0] == "funnelpulse" for c in commands)
    return commands


def demo_output() -> str:
    text = README.read_text()
    section = text.split("`make demo` on the bundled sample", 1)[1]
    return section.split("```\n", 2)[1]


def test_the_first_hour_runs_command_by_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNNELPULSE_")}
    for command in walkthrough():
        done = subprocess.run(
            [sys.executable, "-m", "funnelpulse", *command[1:]],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=900,
        )
        assert done.returncode == 0, f"{shlex.join(command)}:\n{done.stderr[-2000:]}"
        assert "Error:" not in done.stderr, done.stderr
        if command[1:] == ["demo"]:
            assert done.stdout == demo_output()  # the README shows the real output
        if "explain" in command:
            assert "traffic drop" in done.stdout.splitlines()[0]
