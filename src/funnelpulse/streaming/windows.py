"""What both stream engines share about the live table: the metric expressions (taken from the
batch hourly-brand model, so live and batch gold count the same way), the key that identifies a
repeated event, and its schema (defined in the contract)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import tables
from ..contract import COUNTS
from ..engines.base import GOLD_MODELS

APP_ID = "funnelpulse-stream"
METRICS = tuple(COUNTS)
# Why a message is not an event at all; every other reason comes from the ingest step's rules.
NOT_AN_EVENT = "not a JSON object with the raw columns"
# The embedded stream also takes CSV lines (the REES46 column order); Spark takes JSON only.
NOT_A_MESSAGE = "not a JSON object or CSV line with the raw columns"
# The placeholder a model writes the contract's COUNTS with (contract.render fills it).
COUNTS_FRAGMENT = re.compile(r"\{\{\s*counts\s*\}\}")
WINDOW_MATCH = "t.window_start = s.window_start AND t.brand IS NOT DISTINCT FROM s.brand"


def upsert_windows(table: Any, data: Any, commit: Any, predicate: str = WINDOW_MATCH) -> None:
    """MERGE windows into the live table in one commit: both engines' way of writing a batch."""
    (
        table.merge(
            data, predicate=predicate, source_alias="s", target_alias="t", commit_properties=commit
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def metric_expressions(dialect: str = "spark") -> dict[str, str]:
    """The aggregate expressions of the batch hourly-brand model, in `dialect`: one definition."""
    model = next(m for m in GOLD_MODELS if m.name == tables.GOLD_HOURLY_BRAND)
    if dialect == "duckdb" and COUNTS_FRAGMENT.search(model.template):
        # the model writes the contract's counts as they are (DuckDB is the models' dialect):
        # no SQL parser to load at the stream's start
        return {name: COUNTS[name] for name in METRICS}
    return parsed_metric_expressions(model.sql, dialect)


def parsed_metric_expressions(sql: str, dialect: str) -> dict[str, str]:
    """The aggregate expressions (named as the METRICS) of the inner SELECT of `sql` (DuckDB)."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb")
    inner = next(s for s in tree.find_all(exp.Select) if s is not tree)
    return {
        e.alias: e.this.sql(dialect=dialect)
        for e in inner.expressions
        if isinstance(e, exp.Alias) and e.alias in METRICS
    }


def silver_sql() -> str:
    """The silver model's SQL (reads `bronze_events`), as the batch build runs it."""
    from ..engines.base import SILVER_MODEL

    return str(SILVER_MODEL.sql)


@dataclass
class StreamResult:
    """What a stream run did, whichever engine ran it."""

    batches: int = 0
    input_rows: int = 0
    late_rows_dropped: int = 0
    late_quarantined: bool = False  # the embedded engine quarantines late events (counted in both)
    quarantined: int = 0
    windows: int = 0
    alerts_sent: int = 0
    alerts_failed: int = 0
    seconds: float = 0.0
    duplicates_dropped: int = 0
    state_keys: int = 0
    state_bytes: int = 0
    log: list[str] = field(default_factory=list)
