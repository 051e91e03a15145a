"""Raw files -> bronze + quarantine: nothing lost, clear errors, idempotent."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import pytest
from conftest import HEADER, row, write_csv

from funnelpulse import Pipeline, tables
from funnelpulse.errors import InputError


def _bronze(p: Pipeline):
    return p.table(tables.BRONZE)


def _quarantine(p: Pipeline):
    return p.table(tables.QUARANTINE)


MALFORMED = [
    row("2019-10-01 00:00:00"),  # good
    "2019-10-01 00:00:01 UTC,view,1,7,,acme",  # too few fields
    row("2019-10-01 00:00:02") + ",extra",  # too many fields
    row("not a time"),
    row("2019-13-45 25:61:00"),
    row("2019-10-01 00:00:03", etype="click"),
    row("2019-10-01 00:00:04", etype=""),
    row("2019-10-01 00:00:05", price="abc"),
    row("2019-10-01 00:00:06", price="-1.00"),
    "2019-10-01 00:00:07 UTC,view,,7,,acme,5.00,10,s1",  # missing product_id
    "2019-10-01 00:00:08 UTC,view,1,7,,acme,5.00,,s1",  # missing user_id
    "2019-10-01 00:00:09 UTC,view,x1,7,,acme,5.00,10,s1",  # non-numeric product_id
    "2019-10-01 00:00:10 UTC,view,1,cat,,acme,5.00,10,s1",  # non-numeric category_id
    row("2019-10-01 00:00:11", price=""),  # empty price: typed as NULL, kept in bronze
    row("2019-10-01 00:00:12", session=""),  # empty session: real rows have this
    row("2019-10-01 00:00:13", etype="PURCHASE"),  # case is normalised
]


def test_malformed_corpus_loses_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", MALFORMED)
    raw = path.read_bytes()
    # an undecodable line in the middle of the file
    path.write_bytes(
        raw
        + b"2019-10-01 00:00:14 UTC,view,1,7,,\xff\xfeacme,5.00,10,s1\n"
        + row("2019-10-01 00:00:15").encode()
        + b"\n"
    )
    result = pipeline.ingest([path])
    data_lines = len(MALFORMED) + 2
    bronze, quarantine = _bronze(pipeline), _quarantine(pipeline)
    assert bronze.num_rows + quarantine.num_rows == data_lines
    assert result.bronze_rows == bronze.num_rows == 5
    assert result.quarantined_rows == quarantine.num_rows == data_lines - 5

    by_line = {r["line_number"]: r for r in quarantine.to_pylist()}
    # line numbers count the header as line 1
    expected = {
        3: "missing columns",
        4: "too many columns",
        5: "bad event_time",
        6: "bad event_time",
        7: "unknown event_type",
        8: "missing event_type",
        9: "non-numeric price",
        10: "negative or invalid price",
        11: "missing product_id",
        12: "missing user_id",
        13: "non-numeric product_id",
        14: "non-numeric category_id",
        18: "invalid encoding",
    }
    assert {k: v["reason"].split(":")[0] for k, v in by_line.items()} == expected
    assert by_line[7]["raw_line"] == MALFORMED[5]
    assert by_line[3]["raw_line"] == MALFORMED[1]
    assert all(r["source_file"] == str(path.resolve()) for r in by_line.values())

    kept = {r["source_row"]: r for r in bronze.to_pylist()}
    types = sorted(r["event_type"] for r in kept.values())
    assert types == ["purchase", "view", "view", "view", "view"]
    assert [r["price"] for r in kept.values() if r["price"] is None] == [None]
    assert [r["user_session"] for r in kept.values() if r["user_session"] is None] == [None]


# Event times in a zone other than UTC: a cast would silently drop the zone (DuckDB) or convert
# it (Spark), so they are rejected; a time without a zone is taken as UTC.
ZONED = [
    "2019-10-01 00:00:17+02:00,view,1,7,,acme,5.00,10,s1",
    "2019-10-01 00:00:18 PST,view,1,7,,acme,5.00,10,s1",
    "2019-10-01T00:00:19,view,1,7,,acme,5.00,10,s1",
]


def test_event_times_in_other_zones_are_quarantined(pipeline: Pipeline, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    pipeline.ingest([write_csv(tmp_path / "zones.csv", [row("2019-10-01 00:00:16"), *ZONED])])
    assert sorted(r["event_time"] for r in _bronze(pipeline).to_pylist()) == [
        datetime(2019, 10, 1, 0, 0, 16, tzinfo=UTC),
        datetime(2019, 10, 1, 0, 0, 19, tzinfo=UTC),
    ]
    reasons = {r["line_number"]: r["reason"] for r in _quarantine(pipeline).to_pylist()}
    assert reasons == {
        3: "bad event_time: 2019-10-01 00:00:17+02:00",
        4: "bad event_time: 2019-10-01 00:00:18 PST",
    }


def test_line_numbers_count_blank_lines(pipeline: Pipeline, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "gaps.csv", [row("2019-10-01 00:00:00")])
    with path.open("a") as f:  # two blank lines, then a bad row and a row the reader rejects
        f.write("\n\n" + row("2019-10-01 00:00:01", etype="click") + "\nx,y\n")
    pipeline.ingest([path])
    reasons = {r["line_number"]: r["reason"] for r in _quarantine(pipeline).to_pylist()}
    assert {k: v.split(":")[0] for k, v in reasons.items()} == {
        5: "unknown event_type",
        6: "missing columns",
    }


def test_reingest_same_file_does_not_duplicate(pipeline: Pipeline, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv", [row("2019-10-01 00:00:00"), row("2019-10-02 00:00:00"), "x,y"]
    )
    pipeline.ingest([path])
    pipeline.ingest([path])
    assert _bronze(pipeline).num_rows == 2
    assert _quarantine(pipeline).num_rows == 1
    # the same content under another name is recognised too
    copy = tmp_path / "copy.csv"
    copy.write_bytes(path.read_bytes())
    pipeline.ingest([copy])
    assert _bronze(pipeline).num_rows == 2
    assert {r["source_file"] for r in _bronze(pipeline).to_pylist()} == {str(copy.resolve())}


def test_changed_file_replaces_only_its_own_rows(pipeline: Pipeline, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [row("2019-10-01 00:00:00"), row("2019-10-02 00:00:00")])
    pipeline.ingest([path])
    other = write_csv(tmp_path / "b.csv", [row("2019-10-03 00:00:00")])
    pipeline.ingest([other])
    write_csv(path, [row("2019-10-01 00:00:00")])
    pipeline.ingest([path])
    assert sorted(str(r["event_date"]) for r in _bronze(pipeline).to_pylist()) == [
        "2019-10-01",
        "2019-10-03",
    ]


def test_bronze_is_partitioned_by_utc_event_date(
    pipeline: Pipeline, tmp_path: Path, new_york_tz: None
) -> None:
    path = write_csv(tmp_path / "a.csv", [row("2019-10-01 23:59:59"), row("2019-10-02 00:00:00")])
    pipeline.ingest([path])
    folder = Path(pipeline.warehouse, tables.BRONZE)
    assert (folder / "_delta_log").is_dir()
    assert sorted(p.name for p in folder.glob("event_date=*")) == [
        "event_date=2019-10-01",
        "event_date=2019-10-02",
    ]
    times = sorted(r["event_time"].isoformat() for r in _bronze(pipeline).to_pylist())
    assert times == ["2019-10-01T23:59:59+00:00", "2019-10-02T00:00:00+00:00"]


def test_gzip_headerless_and_parquet_inputs(pipeline: Pipeline, tmp_path: Path) -> None:
    lines = [row("2019-10-01 00:00:00"), row("2019-10-01 00:00:01", etype="cart")]
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(("\n".join([HEADER, *lines]) + "\n").encode()))
    headerless = write_csv(tmp_path / "nohead.csv", [row("2019-11-01 00:00:00")], header=False)
    parquet = tmp_path / "c.parquet"
    duckdb.sql(
        "COPY (SELECT TIMESTAMPTZ '2019-12-01 10:00:00+00' AS event_time, 'purchase' AS event_type, "
        "5::BIGINT AS product_id, 7::BIGINT AS category_id, NULL::VARCHAR AS category_code, "
        "'acme' AS brand, 2.5 AS price, 10::BIGINT AS user_id, 's9' AS user_session) "
        f"TO '{parquet}' (FORMAT parquet)"
    )
    result = pipeline.ingest([gz, headerless, parquet])
    assert [f.bronze_rows for f in result.files] == [2, 1, 1]
    rows = {r["event_type"]: r for r in _bronze(pipeline).to_pylist()}
    assert rows["purchase"]["event_time"].isoformat() == "2019-12-01T10:00:00+00:00"
    assert rows["purchase"]["price"] == 2.5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        ((HEADER + "\n").encode(), "no data rows"),
        (b"a,b,c\n1,2,3\n", "not in the REES46 format"),
        ("\ufeffevent_time;x\n".encode("utf-16"), "not UTF-8"),
    ],
)
def test_unusable_files_give_clear_errors(
    pipeline: Pipeline, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "input.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        pipeline.ingest([path])
    assert str(path) in str(info.value)


def test_missing_and_unsupported_files(pipeline: Pipeline, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        pipeline.ingest([tmp_path / "nope.csv"])
    odd = tmp_path / "events.json"
    odd.write_text("{}")
    with pytest.raises(InputError, match="unsupported file type"):
        pipeline.ingest([odd])
    bad_gz = tmp_path / "broken.csv.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="cannot be read"):
        pipeline.ingest([bad_gz])


def test_ingest_from_a_uri_folder(pipeline: Pipeline, tmp_path: Path) -> None:
    # file:// goes through the same staging code as gs:// and s3:// (pyarrow filesystems)
    raw = tmp_path / "raw"
    raw.mkdir()
    write_csv(raw / "a.csv", [row("2019-10-01 00:00:00"), "broken"])
    write_csv(raw / "b.csv", [row("2019-10-02 00:00:00")])
    result = pipeline.ingest([f"file://{raw}/"])
    assert [f.path for f in result.files] == [f"file://{raw}/a.csv", f"file://{raw}/b.csv"]
    assert result.bronze_rows == 2 and result.quarantined_rows == 1
    assert {r["source_file"] for r in _bronze(pipeline).to_pylist()} == {
        f"file://{raw}/a.csv",
        f"file://{raw}/b.csv",
    }
    with pytest.raises(InputError, match="no such file or folder"):
        pipeline.ingest([f"file://{tmp_path}/missing/"])


# -- DuckDB's errors, told apart by type in the DuckDB adapter --------------------------------


def _parquet_events(path: Path, rows: int = 200_000) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from funnelpulse.contract import RAW_COLUMNS

    values = {
        "event_time": [f"2019-10-01 10:{i % 60:02d}:00 UTC" for i in range(rows)],
        "event_type": ["view"] * rows,
        "product_id": [str(i) for i in range(rows)],
        "category_id": ["7"] * rows,
        "category_code": [""] * rows,
        "brand": ["acme"] * rows,
        "price": ["5.0"] * rows,
        "user_id": [str(i) for i in range(rows)],
        "user_session": [f"s{i}" for i in range(rows)],
    }
    pq.write_table(pa.table({c: values[c] for c in RAW_COLUMNS}), path, row_group_size=20_000)
    return path


def test_a_parquet_file_corrupt_mid_way_is_an_input_error_and_writes_nothing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Its footer reads, so DuckDB fails only mid-stream, through the Arrow reader: still the
    input's fault, said without engine jargon, and no bronze row of it is committed."""
    path = _parquet_events(tmp_path / "events.parquet")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 5000] = bytes((b * 7 + 13) % 256 for b in data[middle : middle + 5000])
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as caught:
        pipeline.ingest([path])
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot be read"), message
    assert " Error:" not in message and "bronze_events" not in message, message
    bronze = tables.table_path(pipeline.warehouse, tables.BRONZE)
    assert not tables.exists(bronze) or tables.read(bronze).num_rows == 0


def test_running_out_of_memory_is_said_as_such_not_as_bad_input(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real DuckDB with a 4 MB memory limit: its OutOfMemoryException becomes a memory error,
    not "cannot be read as REES46 events"."""
    from funnelpulse.engines import duckdb_ingest
    from funnelpulse.errors import FunnelPulseError

    real_connect = duckdb_ingest.connect

    def small(threads: int | None = None) -> duckdb.DuckDBPyConnection:
        con = real_connect(threads)
        con.execute("SET memory_limit='4MB'")
        return con

    monkeypatch.setattr(duckdb_ingest, "connect", small)
    path = _parquet_events(tmp_path / "events.parquet")
    with pytest.raises(FunnelPulseError) as caught:
        pipeline.ingest([path])
    assert not isinstance(caught.value, InputError)
    assert str(caught.value).startswith(f"{path}: ran out of memory while reading it ("), str(
        caught.value
    )
    monkeypatch.setattr(duckdb_ingest, "connect", real_connect)
    assert pipeline.ingest([path]).bronze_rows == 200_000  # with memory, the same file is fine


def test_duckdb_errors_are_classified_by_type() -> None:
    """Real DuckDB exceptions, raised directly and after crossing the Arrow stream (which keeps
    only their message): each gets its own user error; an internal error stays a bug."""
    from funnelpulse.engines.duckdb_ingest import as_duckdb_error, read_error
    from funnelpulse.errors import FunnelPulseError

    con = duckdb.connect()
    with pytest.raises(duckdb.IOException) as io_error:
        con.sql("SELECT * FROM read_csv('/nonexistent/events.csv')")
    told = read_error(Path("e.csv"), io_error.value)
    assert isinstance(told, InputError) and str(told).startswith("e.csv: cannot be read (No files")

    # a value that fails only at run time, half way through
    late = "SELECT CAST(CASE WHEN i < 100000 THEN i::VARCHAR ELSE 'x' END AS INTEGER) FROM range(200000) t(i)"
    with pytest.raises(duckdb.ConversionException) as conversion:
        con.sql(late).fetchall()
    told = read_error(Path("e.csv"), conversion.value)
    assert isinstance(told, InputError) and "cannot be read as REES46 events" in str(told)

    with pytest.raises(OSError) as streamed:  # the same kind of error, through the Arrow reader
        for _ in con.sql(late).to_arrow_reader(10_000):
            pass
    assert not isinstance(streamed.value, duckdb.Error)
    assert isinstance(as_duckdb_error(streamed.value), duckdb.ConversionException)
    assert isinstance(read_error(Path("e.csv"), streamed.value), InputError)

    memory = read_error(Path("e.csv"), OSError("Out of Memory Error: failed to allocate 1 MiB"))
    assert type(memory) is FunnelPulseError and "ran out of memory" in str(memory)
    internal = duckdb.InternalException("INTERNAL Error: broken invariant")
    assert read_error(Path("e.csv"), internal) is internal
    plain = OSError("No space left on device")
    assert read_error(Path("e.csv"), plain) is plain


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def test_event_times_ahead_of_the_clock_are_quarantined_old_ones_never(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    """Batch ingest judges event times against the clock only: more than max_future_s ahead goes
    to quarantine with its reason; any age is fine (2015, 2019 files are history, not errors)."""
    if engine == "spark":
        request.getfixturevalue("shared_spark")
    from datetime import UTC, datetime, timedelta

    from funnelpulse.ingest import FUTURE_REASON

    now = datetime.now(UTC).replace(microsecond=0)

    def at(delta: timedelta) -> str:
        return (now + delta).strftime("%Y-%m-%d %H:%M:%S")

    lines = [
        row("2015-06-01 12:00:00"),
        row("2019-10-01 10:00:00"),
        row("2030-01-01 00:00:00", user=2),
        row(at(timedelta(minutes=30)), user=3),  # within the default hour
        row(at(timedelta(hours=2)), user=4),
        row(at(timedelta(minutes=-1)), user=5),
    ]
    path = write_csv(tmp_path / "clock.csv", lines)
    p = Pipeline(warehouse=str(tmp_path / "wh"))
    result = p.ingest([path], engine=engine)
    assert (result.bronze_rows, result.quarantined_rows) == (4, 2)
    bad = _quarantine(p).to_pylist()
    assert sorted(r["line_number"] for r in bad) == [4, 6]
    assert all(r["reason"].startswith(FUTURE_REASON + ": ") for r in bad)
    assert {r["raw_line"] for r in bad} == {lines[2], lines[4]}
    # a tighter bound is a setting; 0 allows nothing after the clock
    strict = Pipeline(warehouse=str(tmp_path / "strict"), max_future_s=0)
    assert strict.ingest([path], engine=engine).quarantined_rows == 3
