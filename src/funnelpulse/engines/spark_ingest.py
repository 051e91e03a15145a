"""Ingest on the Spark engine: Spark's executors read the raw files and judge every row with the
ingest step's own typing rules (TYPED_SQL, transpiled to Spark SQL); the results are committed to
the same Delta bronze_events and quarantine_events tables the DuckDB engine writes.

Lines are numbered exactly (a file split across partitions gets each partition's offset from one
counting pass), so quarantine rows name the line of the file they came from. Lines are split with
the DuckDB engine's rules (raw_lines), and the rows are checked against the file's line breaks,
counted apart, before anything is committed.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import faults, tables
from .. import warehouse as safety
from ..console import Progress, SilentProgress
from ..errors import InputError
from ..ingest import (
    DEFAULT_MAX_FUTURE_S,
    RAW_COLUMNS,
    FileResult,
    IngestResult,
    check_file,
    file_kind,
    list_uri,
    not_after,
    typed_sql,
)
from ..raw_lines import (
    ENCODING_REASON,
    QUOTING_REASON,
    close_accounts,
    count_lines,
    fingerprint,
)
from ..raw_lines import quoted_fields_sql as _quotes_ok
from ._typing import SparkDataFrame, SparkSession
from .spark_delta import write_delta
from .spark_session import SparkConfig, using_spark

# Splits a CSV line on the commas outside double quotes.
FIELD_SPLIT = r',(?=(?:[^"]*"[^"]*")*[^"]*$)'
# Blank lines travel with the rows (so that they are counted) under this reader reason.
BLANK = "blank line"


def spark_typed_sql(
    keep: tuple[str, ...] = (), latest: datetime | None = None, ahead_s: int | None = None
) -> str:
    """The ingest step's typing rules (`typed_sql`) in Spark's dialect: SQLGlot, plus the three
    functions it leaves in DuckDB's terms. The stream judges events with them too. Events after
    `latest`, or more than `ahead_s` after each batch's clock (a stream), are quarantined."""
    from .dialect import TEXT_FIXUPS, to_spark_checked

    sql = to_spark_checked(typed_sql(keep, latest), tuple(old for old, _, _ in TEXT_FIXUPS))
    if ahead_s is not None:
        bound = "CAST('9999-12-31 23:59:59' AS TIMESTAMP)"
        assert sql.count(bound) == 1, bound
        sql = sql.replace(bound, f"(current_timestamp() + INTERVAL {int(ahead_s)} SECONDS)")
    return sql


def ingest_spark(
    warehouse: str,
    paths: list[str | Path],
    progress: Progress | None = None,
    config: SparkConfig | None = None,
    max_future_s: int = DEFAULT_MAX_FUTURE_S,
) -> IngestResult:
    """Ingest local files or URIs (read by Spark directly: gs://, s3a://, hdfs://, file://);
    events more than `max_future_s` ahead of the clock are quarantined."""
    progress = progress or SilentProgress()
    if not paths:
        raise InputError("No input files given. Pass one or more CSV, CSV.gz or Parquet files")
    files: list[str] = []
    for path in paths:
        text = str(path)
        files += list_uri(text) if "://" in text else [str(Path(text).resolve())]
    checked = [(f, check_file(f), fingerprint(f)) for f in files]
    result = IngestResult()
    with using_spark(config or SparkConfig(), progress) as spark:
        for location, header, ingest_id in checked:
            progress.step(f"Reading {Path(location).name}")
            latest = not_after(max_future_s)
            result.files.append(_ingest_one(spark, warehouse, location, header, ingest_id, latest))
    return result


def _numbered(frame: SparkDataFrame) -> Any:
    """`frame` with `ordinal`: each row's 1-based position in its file (partitions in file order)."""
    from pyspark.sql import functions as F

    marked = frame.select(
        "*",
        F.spark_partition_id().alias("_part"),
        F.monotonically_increasing_id().bitwiseAND((1 << 33) - 1).alias("_k"),
    )
    parts = frame.rdd.getNumPartitions()
    offset = F.lit(0)
    if parts > 1:
        counts: dict[int, int] = dict(marked.groupBy("_part").count().collect())  # type: ignore[arg-type]
        offsets, total = [], 0
        for part in range(parts):
            offsets.append(total)
            total += counts.get(part, 0)
        offset = F.element_at(F.array(*[F.lit(o) for o in offsets]), F.col("_part") + 1)
    return marked.withColumn("ordinal", (offset + F.col("_k") + 1).cast("bigint")).drop(
        "_part", "_k"
    )


def _raw_csv(spark: SparkSession, location: str, header: bool) -> Any:
    from pyspark.sql import functions as F

    # Lines end at \n only (a lone \r is part of a line), as the DuckDB engine reads them.
    lines = _numbered(spark.read.option("lineSep", "\n").text(location))
    if header:
        lines = lines.where("ordinal > 1")
    # Validity first: any string function would already have replaced the undecodable bytes.
    lines = lines.select(
        "ordinal",
        F.expr("is_valid_utf8(value)").alias("valid"),
        F.regexp_replace(
            F.when(F.col("ordinal") == 1, F.regexp_replace("value", "^\ufeff", "")).otherwise(
                F.col("value")
            ),
            "\r$",
            "",
        ).alias("value"),
    )
    # Most lines hold no quote at all: a plain split is far cheaper than the quote-aware one.
    quoted = F.instr("value", '"') > 0
    fields = lines.select(
        "ordinal",
        "valid",
        "value",
        quoted.alias("quoted"),
        F.when(quoted, F.split("value", FIELD_SPLIT, -1))
        .otherwise(F.split("value", ",", -1))
        .alias("fields"),
    )

    def field(i: int) -> str:
        f = f"get(fields, {i})"
        unquoted = f"replace(substring({f}, 2, length({f}) - 2), '\"\"', '\"')"
        return (
            f"nullif(CASE WHEN quoted AND startswith({f}, '\"') THEN {unquoted} ELSE {f} END, '')"
        )

    n = len(RAW_COLUMNS)
    reader_reason = f"""CASE
        WHEN value = '' THEN '{BLANK}'
        WHEN NOT valid THEN '{ENCODING_REASON}'
        WHEN quoted AND NOT {_quotes_ok("fields")} THEN '{QUOTING_REASON}'
        WHEN size(fields) < {n}
            THEN concat('missing columns: expected number of columns: {n} found: ', size(fields))
        WHEN size(fields) > {n}
            THEN concat('too many columns: expected number of columns: {n} found: ', size(fields))
    END"""
    judged = fields.selectExpr(
        *[f"{field(i)} AS {name}" for i, name in enumerate(RAW_COLUMNS)],
        "ordinal",
        f"{reader_reason} AS reader_reason",
        "value = '' AS blank",
        "value AS raw_text",
    )
    return judged


def _raw_parquet(spark: SparkSession, location: str) -> Any:
    from pyspark.sql import functions as F

    try:
        frame = spark.read.parquet(location)
    except Exception as exc:
        raise InputError(f"{location}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in RAW_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"{location}: Parquet file lacks the REES46 columns {', '.join(missing)}. "
            "Give events with the raw columns"
        )
    kinds = dict(frame.dtypes)
    # Sub-second digits only when there are any, as the DuckDB engine writes them.
    columns = [
        F.concat(
            F.date_format(c, "yyyy-MM-dd HH:mm:ss"),
            F.when(
                F.unix_micros(F.col(c).cast("timestamp")) % 1_000_000 != 0,
                F.date_format(c, ".SSSSSS"),
            ).otherwise(F.lit("")),
            F.lit(" UTC"),
        ).alias(c)
        if kinds[c].startswith("timestamp")
        else F.col(c).cast("string").alias(c)
        for c in RAW_COLUMNS
    ]
    return _numbered(frame.select(*columns)).select(
        *RAW_COLUMNS,
        "ordinal",
        F.lit(None).cast("string").alias("reader_reason"),
        F.lit(False).alias("blank"),
        F.lit(None).cast("string").alias("raw_text"),
    )


def _ingest_one(
    spark: SparkSession,
    warehouse: str,
    location: str,
    header: bool,
    ingest_id: str,
    latest: datetime | None = None,
) -> FileResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    is_csv = file_kind(Path(location)) == "csv"
    raw = _raw_csv(spark, location, header) if is_csv else _raw_parquet(spark, location)
    raw.createOrReplaceTempView("raw")
    # Judged once, written twice (good rows, bad rows): keep the judged rows rather than reread.
    typed = spark.sql(spark_typed_sql(("blank",), latest)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        _check_accounts(spark, typed, location, header, is_csv)
        source, ingest = F.lit(location), F.lit(ingest_id)
        bronze = typed.where("reason IS NULL").select(
            *RAW_COLUMNS,
            "event_date",
            source.alias("source_file"),
            # The data row's position, as DuckDB numbers it (lines after the header).
            (F.col("ordinal") - (1 if header else 0)).alias("source_row"),
            ingest.alias("ingest_id"),
        )
        bad = typed.where("reason IS NOT NULL AND NOT blank").select(
            source.alias("source_file"),
            F.col("ordinal").alias("line_number"),
            "raw_line",
            "reason",
            ingest.alias("ingest_id"),
            F.current_timestamp().alias("ingested_at"),
        )
        replace = (
            tables.SameValue("source_file", location),
            tables.SameValue("ingest_id", ingest_id),
        )
        # Raw files are in time order, so each task's rows span few dates: no shuffle needed.
        # Both commits as one step: a crash between them is finished or undone by the next command.
        with safety.journal(
            warehouse,
            "ingest",
            source=location,
            path=None if "://" in location else os.path.abspath(location),
            ingest_id=ingest_id,
            versions=safety.versions(warehouse, safety.INGEST_TABLES),
        ):
            bronze_rows = write_delta(
                bronze, tables.table_path(warehouse, tables.BRONZE), "event_date", replace, False
            )
            faults.checkpoint("ingest.bronze_committed")
            bad_rows = write_delta(
                bad, tables.table_path(warehouse, tables.QUARANTINE), None, replace
            )
        reasons = (
            bad.groupBy(F.substring_index("reason", ":", 1).alias("kind"))
            .count()
            .orderBy(F.desc("count"))
            .collect()
        )
    finally:
        typed.unpersist()
    return FileResult(
        path=location,
        bronze_rows=bronze_rows,
        quarantined_rows=bad_rows,
        reasons={r["kind"]: r["count"] for r in reasons},
    )


def _check_accounts(
    spark: SparkSession, typed: SparkDataFrame, location: str, header: bool, is_csv: bool
) -> None:
    """Before any commit: every line of the file, counted apart in Python, is a header, blank,
    bronze or quarantine row (or, for Parquet, every row of the file's metadata)."""
    kinds: dict[str, int] = dict(  # type: ignore[arg-type]
        typed.selectExpr(
            "CASE WHEN blank THEN 'blank' WHEN reason IS NULL THEN 'bronze' ELSE 'bad' END AS k"
        )
        .groupBy("k")
        .count()
        .collect()
    )
    bronze, bad, blank = (kinds.get(k, 0) for k in ("bronze", "bad", "blank"))
    if is_csv:
        data_lines = count_lines(location) - blank - (1 if header else 0)
    else:
        data_lines = spark.read.parquet(location).count()
    close_accounts(
        location,
        read_whole=True,
        data_lines=data_lines,
        bronze_rows=bronze,
        quarantined_rows=bad,
    )
