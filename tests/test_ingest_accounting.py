"""Every physical line of an input is accounted for: in bronze, or in quarantine with its own
line number and whole raw text, and an ingest whose accounts do not close commits nothing."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import HEADER, row, write_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from funnelpulse import Pipeline, raw_lines, tables
from funnelpulse.errors import InputError
from funnelpulse.pipeline import sample_files
from funnelpulse.raw_lines import AccountingError, LineReader, fingerprint, split_quoted


def _sample_lines(n: int) -> list[str]:
    october = next(p for p in sample_files() if "2019-10" in p.name)
    with gzip.open(october, "rt") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def _stray_quote(lines: list[str], line_number: int) -> list[str]:
    fields = lines[line_number - 1].split(",")
    fields[4] = '"oops'  # field 5
    return [*lines[: line_number - 1], ",".join(fields), *lines[line_number:]]


def test_a_stray_quote_loses_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    lines = _stray_quote(_sample_lines(201), 11)
    path = tmp_path / "quote.csv"
    path.write_text("\n".join(lines) + "\n")
    result = pipeline.ingest([path])
    assert (result.bronze_rows, result.quarantined_rows) == (199, 1)
    quarantine = pipeline.table(tables.QUARANTINE).to_pylist()
    assert [(r["line_number"], r["raw_line"]) for r in quarantine] == [(11, lines[10])]
    assert quarantine[0]["reason"].startswith("bad quoting")
    rows = pipeline.table(tables.BRONZE).to_pylist()
    # the lines after the quote are all there, the last one too
    assert {r["user_session"] for r in rows} >= {lines[12].split(",")[8], lines[200].split(",")[8]}


def test_quoted_fields_within_a_line_are_read(pipeline: Pipeline, tmp_path: Path) -> None:
    good = row("2019-10-01 00:00:00", brand='"acme, ""the"" inc."')
    unclosed = row("2019-10-01 00:00:01", brand='"acme')
    inner = row("2019-10-01 00:00:02", brand='ac"me')
    path = write_csv(tmp_path / "q.csv", [good, unclosed, inner, row("2019-10-01 00:00:03")])
    pipeline.ingest([path])
    assert sorted(r["brand"] for r in pipeline.table(tables.BRONZE).to_pylist()) == [
        "acme",
        'acme, "the" inc.',
    ]
    bad = {r["line_number"]: r["raw_line"] for r in pipeline.table(tables.QUARANTINE).to_pylist()}
    assert bad == {3: unclosed, 4: inner}


def test_split_quoted() -> None:
    assert split_quoted('a,"b,c",""') == ["a", "b,c", ""]
    assert split_quoted('"x""y",') == ['x"y', ""]
    assert split_quoted('"open') is None
    assert split_quoted('"a"b,c') is None
    assert split_quoted('a"b') is None


@pytest.mark.parametrize("length", [50_000, 3_000_000])
def test_a_very_long_line_is_quarantined_whole(
    pipeline: Pipeline, tmp_path: Path, length: int
) -> None:
    long_brand = row("2019-10-01 00:00:01", brand="b" * length)
    long_bad = row("2019-10-01 00:00:02", brand="x" * length, etype="click")
    long_broken = "2019-10-01 00:00:03 UTC,view," + "y" * length  # too few fields
    path = write_csv(
        tmp_path / "long.csv",
        [row("2019-10-01 00:00:00"), long_brand, long_bad, long_broken, row("2019-10-01 00:00:04")],
    )
    result = pipeline.ingest([path])
    assert (result.bronze_rows, result.quarantined_rows) == (3, 2)
    brands = [r["brand"] for r in pipeline.table(tables.BRONZE).to_pylist()]
    assert "b" * length in brands
    bad = {r["line_number"]: r for r in pipeline.table(tables.QUARANTINE).to_pylist()}
    assert bad[4]["raw_line"] == long_bad and bad[4]["reason"].startswith("unknown event_type")
    assert bad[5]["raw_line"] == long_broken and bad[5]["reason"].startswith("missing columns")


def test_raw_line_is_the_line_as_written(pipeline: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "crlf.csv"
    odd = " 2019-10-01 00:00:01 UTC, click ,1,7,,acme,5.00,10,s1"
    path.write_bytes(f"{HEADER}\r\n{row('2019-10-01 00:00:00')}\r\n{odd}\r\n   \r\n".encode())
    pipeline.ingest([path])
    bad = {r["line_number"]: r for r in pipeline.table(tables.QUARANTINE).to_pylist()}
    assert {k: v["raw_line"] for k, v in bad.items()} == {3: odd, 4: "   "}


def test_equal_size_files_that_differ_in_the_middle_are_two_files(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    # 3 MiB files of equal size that differ only in the middle (not in the first or last MiB)
    lines = [
        row(f"2019-10-01 00:{i // 60 % 60:02d}:{i % 60:02d}", product=i) for i in range(60_000)
    ]
    a = write_csv(tmp_path / "a.csv", lines)
    middle = len(lines) // 2
    lines[middle] = row("2019-10-02 00:00:00", product=middle)  # same length, another day
    b = write_csv(tmp_path / "b.csv", lines)
    assert a.stat().st_size == b.stat().st_size > 3 << 20
    assert fingerprint(a) != fingerprint(b)
    pipeline.ingest([a])
    pipeline.ingest([b])
    bronze = pipeline.table(tables.BRONZE)
    assert bronze.num_rows == 2 * len(lines)
    assert {r["source_file"] for r in bronze.select(["source_file"]).to_pylist()} == {
        str(a.resolve()),
        str(b.resolve()),
    }


UTC_SPELLINGS = [
    "2019-10-01T00:00:00Z",
    "2019-10-01 00:00:03+00:00",
    "2019-10-01 00:00:04 utc",
    "2019-10-01 00:00:05+0000",
    "2019-10-01T00:00:06z",
    "2019-10-01 00:00:07 GMT",
    "2019-10-01T00:00:08.250+00",
    "2019-10-01 00:00:09 Z",
]
OTHER_ZONES = ["2019-10-01 00:00:10+01:00", "2019-10-01 00:00:11 CET", "2019-10-01 00:00:12-0500"]


def _zone_lines() -> list[str]:
    return [f"{t},view,1,7,,acme,5.00,10,s1" for t in UTC_SPELLINGS + OTHER_ZONES]


def test_every_spelling_of_utc_is_accepted(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.ingest([write_csv(tmp_path / "utc.csv", _zone_lines())])
    times = sorted(r["event_time"] for r in pipeline.table(tables.BRONZE).to_pylist())
    assert times == [
        datetime(2019, 10, 1, 0, 0, s, 250_000 if s == 8 else 0, tzinfo=UTC)
        for s in (0, 3, 4, 5, 6, 7, 8, 9)
    ]
    reasons = {r["line_number"]: r["reason"] for r in pipeline.table(tables.QUARANTINE).to_pylist()}
    assert reasons == {10 + i: f"bad event_time: {t}" for i, t in enumerate(OTHER_ZONES)}


def test_line_reader_counts_whatever_the_chunking(tmp_path: Path) -> None:
    data = f"{HEADER}\r\n\n{row('2019-10-01 00:00:00')}\n\n\nx\r\ny".encode()
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    for chunk in (1, 2, 7, 1 << 20):
        reader = LineReader(str(path), header=True, chunk=chunk, keep_blank_numbers=True)
        rows = pa.Table.from_batches(list(reader.batches()))
        assert rows.column("line").to_pylist() == [row("2019-10-01 00:00:00"), "x", "y"]
        assert rows.column("ordinal").to_pylist() == [2, 5, 6]  # line number - header
        assert (reader.counted_lines, reader.physical_lines, reader.data_lines) == (7, 7, 3)
        assert reader.blank_numbers == [2, 4, 5]
        reader.check(2, 1)
        with pytest.raises(AccountingError, match="3 data rows counted"):
            reader.check(2, 0)


def test_an_ingest_whose_accounts_do_not_close_commits_nothing(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that loses a line (as DuckDB's did after a stray quote) is caught before commit."""
    from funnelpulse import raw_lines

    good = write_csv(tmp_path / "good.csv", [row("2019-10-01 00:00:00")])
    pipeline.ingest([good])
    path = write_csv(tmp_path / "a.csv", [row(f"2019-10-01 00:00:0{i}") for i in range(5)])
    split = raw_lines.LineReader._batch

    def losing(self: LineReader, text: pa.Buffer, *more: bool) -> pa.RecordBatch | None:
        batch = split(self, text, *more)
        return None if batch is None else batch.slice(1)

    monkeypatch.setattr(raw_lines.LineReader, "_batch", losing)
    with pytest.raises(AccountingError, match="5 data rows counted in the file but 4 went"):
        pipeline.ingest([path])
    assert pipeline.table(tables.BRONZE).num_rows == 1
    assert not (Path(pipeline.warehouse) / tables.QUARANTINE).exists() or (
        pipeline.table(tables.QUARANTINE).num_rows == 0
    )


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.usefixtures("shared_spark")
def test_spark_ingest_accounts_for_every_line_as_duckdb_does(tmp_path: Path) -> None:
    lines = _stray_quote(_sample_lines(60), 11)
    extra = [
        *_zone_lines(),
        row("2019-10-01 00:00:13", brand="l" * 50_000),
        "2019-10-01 00:00:14 UTC,view," + "y" * 50_000,
        row("2019-10-01 00:00:15", brand='"quoted, with comma"'),
        row("2019-10-01 00:00:16", brand='ac"me'),
        "   ",
        "",
        row("2019-10-01 00:00:17") + "\r",
    ]
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines + extra) + "\n")
    duck = Pipeline(warehouse=str(tmp_path / "duck"))
    spark = Pipeline(warehouse=str(tmp_path / "spark"), spark_master="local[2]")
    a = duck.ingest([path])
    b = spark.ingest([path], engine="spark")
    data_lines = len(lines) + len(extra) - 2  # header and the empty line
    assert a.bronze_rows + a.quarantined_rows == data_lines
    assert (b.bronze_rows, b.quarantined_rows) == (a.bronze_rows, a.quarantined_rows)
    assert b.files[0].reasons == a.files[0].reasons
    for name, drop in ((tables.BRONZE, ()), (tables.QUARANTINE, ("ingested_at",))):
        keep = [c for c in duck.table(name).column_names if c not in drop]
        assert sorted(map(str, spark.table(name).select(keep).to_pylist())) == sorted(
            map(str, duck.table(name).select(keep).to_pylist())
        )


def test_a_truncated_gzip_file_commits_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    lines = [
        row(f"2019-10-01 00:{i // 60 % 60:02d}:{i % 60:02d}", product=i) for i in range(50_000)
    ]
    whole = gzip.compress(("\n".join([HEADER, *lines]) + "\n").encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="cut.csv.gz: cannot be read to the end") as info:
        pipeline.ingest([path])
    assert "Traceback" not in str(info.value)
    for name in (tables.BRONZE, tables.QUARANTINE):
        assert not tables.exists(str(Path(pipeline.warehouse, name))) or (
            pipeline.table(name).num_rows == 0
        )


def test_parquet_rows_are_accounted_and_keep_sub_seconds(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    times = [datetime(2019, 10, 1, 0, 0, s, 250_000 * s, tzinfo=UTC) for s in range(4)]
    table = pa.table(
        {
            "event_time": pa.array(times, pa.timestamp("us", "UTC")),
            "event_type": ["view", "cart", "click", "purchase"],
            "product_id": [1, 2, 3, 4],
            "category_id": [7, 7, 7, 7],
            "category_code": [None] * 4,
            "brand": ["acme"] * 4,
            "price": [1.0, 2.0, 3.0, 4.0],
            "user_id": [10, 10, 10, 10],
            "user_session": ["s1"] * 4,
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=2)
    result = pipeline.ingest([path])
    assert (result.bronze_rows, result.quarantined_rows) == (3, 1)
    kept = sorted(r["event_time"] for r in pipeline.table(tables.BRONZE).to_pylist())
    assert kept == [times[0], times[1], times[3]]
    (bad,) = pipeline.table(tables.QUARANTINE).to_pylist()
    assert bad["line_number"] == 3 and bad["reason"] == "unknown event_type: click"


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(
            st.sampled_from([b"", b"a,b", b'"x,y",z', b'"open', b"\xff\xfe", b" ", b"\r"]),
            st.sampled_from([b"\n", b"\r\n"]),
        ),
        max_size=30,
    ),
    tail=st.sampled_from([b"", b"last", b'"']),
    chunk=st.sampled_from([1, 2, 3, 7, 1 << 20]),
)
def test_line_reader_matches_a_plain_split(
    tmp_path_factory: pytest.TempPathFactory,
    pieces: list[tuple[bytes, bytes]],
    tail: bytes,
    chunk: int,
) -> None:
    data = b"".join(text + end for text, end in pieces) + tail
    path = tmp_path_factory.mktemp("lines") / "f.csv"
    path.write_bytes(data)
    reader = LineReader(str(path), header=False, chunk=chunk)
    batches = list(reader.batches())
    got = pa.Table.from_batches(batches, schema=raw_lines.LINES_SCHEMA)
    expected = [
        (number, line.removesuffix(b"\r").decode("utf-8", errors="replace"))
        for number, line in enumerate(data.split(b"\n") if data else [], start=1)
        if line.removesuffix(b"\r")
    ]
    numbered = zip(got.column("ordinal").to_pylist(), got.column("line").to_pylist(), strict=True)
    assert list(numbered) == expected
    reader.check(len(expected), 0)  # the accounts close: every line counted once


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.usefixtures("shared_spark")
def test_spark_ingest_whose_accounts_do_not_close_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelpulse.engines import spark_ingest

    spark = Pipeline(warehouse=str(tmp_path / "spark"), spark_master="local[2]")
    spark.ingest([write_csv(tmp_path / "a.csv", [row("2019-10-01 00:00:00")])], engine="spark")
    path = write_csv(tmp_path / "b.csv", [row("2019-10-02 00:00:00"), "x,y"])
    # a file with one more line than the engine read, as if its reader had dropped one
    monkeypatch.setattr(spark_ingest, "count_lines", lambda location: 4)
    with pytest.raises(AccountingError, match="3 data rows counted in the file but 1 went"):
        spark.ingest([path], engine="spark")
    assert spark.table(tables.BRONZE).num_rows == 1
    assert not tables.exists(str(Path(spark.warehouse, tables.QUARANTINE))) or (
        spark.table(tables.QUARANTINE).num_rows == 0
    )
