"""DuckDB SQL -> Spark SQL: the one place SQLGlot runs, with every fix-up it needs.

Every SQL text FunnelPulse owns is written once, in DuckDB's dialect (the models, the ingest typing
rules, the detection cube, the funnel). The Spark engine runs it after `to_spark`. Each fix-up
below exists because SQLGlot's output differs from what Spark means; each has a test
(tests/test_dialect.py) that fails when SQLGlot changes its output.
"""

from __future__ import annotations

from typing import Any

# Text fix-ups: (what SQLGlot writes, what Spark needs, why).
TEXT_FIXUPS: tuple[tuple[str, str, str], ...] = (
    (
        "TRY_STRPTIME(event_time, '%Y-%m-%d %H:%M:%S UTC')",
        "TRY_TO_TIMESTAMP(event_time, \"yyyy-MM-dd HH:mm:ss 'UTC'\")",
        "DuckDB's strptime pattern has no Spark equivalent SQLGlot writes for a literal zone",
    ),
    (
        "AS TIMESTAMP_NTZ)",
        "AS TIMESTAMP)",
        "the session zone is UTC: a zoned TIMESTAMP keeps instants comparable with Delta's",
    ),
    (r"'\\1 \\2'", "'$1 $2'", "Java regular expressions write back-references with $"),
    ("IS_INF(p)", "ABS(p) = DOUBLE('Infinity')", "Spark has no isinf()"),
)


def _exact_percentile(node: Any) -> Any:
    """DuckDB's quantile_cont -> Spark's exact `percentile` (same linear interpolation);
    SQLGlot would write the approximate percentile."""
    from sqlglot import exp

    if isinstance(node, exp.PercentileCont | exp.Quantile):
        return exp.Anonymous(this="percentile", expressions=[node.this, node.expression])
    return node


def to_spark(sql: str) -> str:
    """One DuckDB statement in Spark's dialect."""
    import sqlglot

    tree = sqlglot.parse_one(sql, read="duckdb").transform(_exact_percentile)
    out = tree.sql(dialect="spark")
    for old, new, _why in TEXT_FIXUPS:
        out = out.replace(old, new)
    return out


def to_spark_checked(sql: str, required: tuple[str, ...]) -> str:
    """`to_spark`, refusing to run if one of the `required` fix-ups (by what SQLGlot writes) no
    longer applies: a silent miss would change which rows are quarantined on Spark."""
    import sqlglot

    raw = sqlglot.parse_one(sql, read="duckdb").transform(_exact_percentile).sql(dialect="spark")
    for old in required:
        if old not in raw:
            raise RuntimeError(f"SQLGlot no longer writes {old!r}; update engines/dialect.py")
    return to_spark(sql)
