"""Each DuckDB -> Spark fix-up fires on the SQL it exists for (fails when SQLGlot's output changes)."""

from __future__ import annotations

import pytest

from funnelpulse.engines.dialect import TEXT_FIXUPS, to_spark, to_spark_checked
from funnelpulse.engines.spark_ingest import spark_typed_sql
from funnelpulse.ingest import typed_sql

# One DuckDB statement per fix-up, keyed by what SQLGlot writes for it.
EXAMPLES = {
    TEXT_FIXUPS[0][0]: "SELECT TRY_STRPTIME(event_time, '%Y-%m-%d %H:%M:%S UTC') FROM t",
    TEXT_FIXUPS[1][0]: "SELECT CAST(x AS TIMESTAMP) FROM t",
    TEXT_FIXUPS[2][0]: r"SELECT regexp_replace(x, '(a) (b)', '\1 \2') FROM t",
    TEXT_FIXUPS[3][0]: "SELECT isinf(p) FROM t",
}


@pytest.mark.parametrize("fixup", TEXT_FIXUPS, ids=[f[2][:30] for f in TEXT_FIXUPS])
def test_each_text_fixup_applies_to_its_example(fixup: tuple[str, str, str]) -> None:
    old, new, _why = fixup
    out = to_spark(EXAMPLES[old])
    assert new in out and old not in out, out


def test_quantiles_become_exact_percentiles() -> None:
    out = to_spark("SELECT quantile_cont(x, 0.9) FROM t")
    assert "PERCENTILE(X, 0.9)" in out.upper() and "APPROX" not in out.upper()


def test_the_ingest_rules_need_every_fixup_and_get_them() -> None:
    sql = spark_typed_sql()
    for old, _new, _why in TEXT_FIXUPS:
        assert old not in sql
    assert "TRY_TO_TIMESTAMP" in sql and "DOUBLE('Infinity')" in sql


def test_a_fixup_sqlglot_no_longer_needs_is_reported() -> None:
    with pytest.raises(RuntimeError, match="no longer writes"):
        to_spark_checked(typed_sql(()), ("SOMETHING SQLGLOT NEVER WRITES",))
