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


def test_no_import_cycle_but_the_one_named() -> None:
    checker = _checker()
    found = {frozenset(c) for c in checker.cycles(checker.graph())}
    assert found <= set(checker.KNOWN), found - set(checker.KNOWN)
    # the detector sees imports placed inside functions: the known cycle goes through them
    assert "funnelpulse.warehouse" in checker.graph()["funnelpulse.ingest"]


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
