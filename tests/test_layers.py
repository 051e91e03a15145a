"""The module graph: no import cycle (imports inside functions count), and the checker can fail."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts/import_cycles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_cycles"] = module
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle() -> None:
    checker = _checker()
    edges = checker.graph()
    assert checker.cycles(edges) == []
    # imports placed inside functions are edges too (recovery's engine is loaded in a function)
    assert "funnelpulse.engines" in edges["funnelpulse.warehouse"]


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from .sub import high\n    return high\n")
    (pkg / "sub" / "high.py").write_text("from .. import low\n")
    (pkg / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import low\n"
    )
    (pkg / "other.py").write_text("from pkg import typed\n")
    checker = _checker()
    edges = checker.graph(tmp_path, "pkg")
    assert edges["pkg.low"] == {"pkg.sub.high"}
    assert edges["pkg.typed"] == set()  # type-only imports never run
    assert edges["pkg.other"] == {"pkg.typed"}
    assert checker.cycles(edges) == [["pkg.low", "pkg.sub.high"]]


HEAVY = ("pyarrow", "pandas", "duckdb", "numpy", "scipy", "deltalake", "sqlglot", "rich")
HEAVY += ("pyspark", "confluent_kafka", "streamlit", "fastapi", "uvicorn")


def test_help_and_version_load_no_heavy_package() -> None:
    """`funnelpulse --help`, a command's --help and --version import only what they need."""
    import subprocess

    code = (
        "import contextlib, io, runpy, sys\n"
        "sys.argv = ['funnelpulse', *sys.argv[1:]]\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        runpy.run_module('funnelpulse', run_name='__main__')\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    for args in (["--help"], ["--version"], ["ingest", "--help"], ["stream", "--help"]):
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]", (args, done.stdout)


def test_the_public_names_still_load_from_the_package() -> None:
    import funnelpulse

    for name in funnelpulse.__all__:
        assert getattr(funnelpulse, name).__name__ == name
    assert set(funnelpulse.__all__) == set(funnelpulse._PUBLIC)
