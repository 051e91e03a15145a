"""Live 5-minute buckets: exact counts, additive MERGE into a real Delta table, replays skipped,
kills before and after the commit, and agreement with the batch hourly gold tables."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from funnelpulse import Pipeline, tables
from funnelpulse.errors import ConfigError
from funnelpulse.generate import generate_events, write_events
from funnelpulse.localdb import connect
from funnelpulse.streaming.buckets import (
    BUCKET_SCHEMA,
    aggregate,
    check_bucket_minutes,
    merge_buckets,
    read_buckets,
    update_buckets,
)

T0 = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)


def events(rows: list[tuple[datetime, str, str | None, str, float]]) -> pa.Table:
    return pa.table(
        {
            "event_time": pa.array([r[0] for r in rows], pa.timestamp("us", "UTC")),
            "event_type": [r[1] for r in rows],
            "brand_norm": pa.array([r[2] for r in rows], pa.string()),
            "price_band": [r[3] for r in rows],
            "price": [r[4] for r in rows],
        }
    )


def as_dict(table: pa.Table) -> dict[tuple[datetime, str, str], tuple[int, int, int, float]]:
    return {
        (r["bucket_start"], r["dimension"], r["segment"]): (
            r["views"],
            r["carts"],
            r["purchases"],
            round(r["revenue"], 6),
        )
        for r in table.to_pylist()
    }


BATCH = events(
    [
        (T0, "view", "acme", "<10", 5.0),
        (T0 + timedelta(minutes=4, seconds=59, microseconds=999_999), "cart", "acme", "<10", 5.0),
        (T0 + timedelta(minutes=5), "purchase", "acme", "<10", 5.0),  # next bucket, exactly
        (T0 + timedelta(minutes=6), "purchase", None, "30-60", 40.0),
        (T0 + timedelta(minutes=7), "remove_from_cart", "zeta", "30-60", 40.0),
    ]
)


def test_aggregate_counts_each_bucket_and_segment_exactly() -> None:
    got = as_dict(aggregate(BATCH, 5))
    b0, b1 = T0, T0 + timedelta(minutes=5)
    assert got == {
        (b0, "shop", "all"): (1, 1, 0, 0.0),
        (b0, "brand", "acme"): (1, 1, 0, 0.0),
        (b0, "price_band", "<10"): (1, 1, 0, 0.0),
        (b1, "shop", "all"): (0, 0, 2, 45.0),
        (b1, "brand", "acme"): (0, 0, 1, 5.0),
        (b1, "brand", "(unknown)"): (0, 0, 1, 40.0),
        (b1, "brand", "zeta"): (0, 0, 0, 0.0),
        (b1, "price_band", "<10"): (0, 0, 1, 5.0),
        (b1, "price_band", "30-60"): (0, 0, 1, 40.0),
    }
    table = aggregate(BATCH, 5)
    assert table.schema == BUCKET_SCHEMA
    ends = pc.subtract(table.column("bucket_end"), table.column("bucket_start")).to_pylist()
    assert set(ends) == {timedelta(minutes=5)}


def test_bucket_size_is_configurable_and_must_tile_an_hour() -> None:
    got = as_dict(aggregate(BATCH, 15))
    assert got[(T0, "shop", "all")] == (1, 1, 2, 45.0)
    assert check_bucket_minutes(10) == 10
    for bad in (0, 7, 45, -5):
        with pytest.raises(ConfigError, match="does not divide an hour"):
            check_bucket_minutes(bad)


def test_duckdb_relation_gives_the_same_buckets_as_arrow() -> None:
    con = connect()
    try:
        con.register("b", BATCH)
        rel = con.sql("SELECT * FROM b")
        assert as_dict(aggregate(rel, 5)) == as_dict(aggregate(BATCH, 5))
    finally:
        con.close()


def test_merge_adds_batches_and_skips_a_replayed_batch(tmp_path: Path) -> None:
    path = str(tmp_path / "wh" / tables.GOLD_STREAM_BUCKETS)
    first = aggregate(BATCH, 5)
    second = aggregate(events([(T0 + timedelta(minutes=1), "purchase", "acme", "<10", 7.5)]), 5)
    assert merge_buckets(path, first, batch_id=1)
    assert merge_buckets(path, second, batch_id=2)
    assert not merge_buckets(path, second, batch_id=2)  # replay after a crash: skipped
    assert not merge_buckets(path, first, batch_id=1)
    got = as_dict(tables.read(path))
    assert got[(T0, "shop", "all")] == (1, 1, 1, 7.5)
    assert got[(T0, "brand", "acme")] == (1, 1, 1, 7.5)
    assert got[(T0 + timedelta(minutes=5), "shop", "all")] == (0, 0, 2, 45.0)
    assert len(got) == 9
    # an empty batch still records its id, so its replay is skipped too
    assert merge_buckets(path, BUCKET_SCHEMA.empty_table(), batch_id=3)
    assert not merge_buckets(path, first, batch_id=3)
    assert as_dict(tables.read(path)) == got


def test_read_buckets_filters_by_time_and_is_empty_without_a_table(tmp_path: Path) -> None:
    wh = str(tmp_path / "wh")
    assert read_buckets(wh).num_rows == 0
    update_buckets(wh, BATCH, batch_id=1, bucket_minutes=5)
    later = read_buckets(wh, since=T0 + timedelta(minutes=5))
    assert set(later.column("bucket_start").to_pylist()) == {T0 + timedelta(minutes=5)}
    assert read_buckets(wh).num_rows == 9


KILL_SCRIPT = """
import sys, pyarrow.parquet as pq
from funnelpulse.streaming.buckets import update_buckets
update_buckets(sys.argv[1], pq.read_table(sys.argv[2]), batch_id=int(sys.argv[3]), bucket_minutes=5)
"""


@pytest.mark.faults
@pytest.mark.parametrize("kill_at", ["stream.buckets_aggregated", "stream.buckets_merged"])
def test_kill_around_the_commit_then_retry_counts_each_event_once(
    tmp_path: Path, kill_at: str
) -> None:
    import pyarrow.parquet as pq

    wh = str(tmp_path / "wh")
    batch_file = tmp_path / "batch.parquet"
    pq.write_table(BATCH, batch_file)
    update_buckets(wh, events([(T0, "view", "acme", "<10", 5.0)]), batch_id=1, bucket_minutes=5)

    def run(env: dict[str, str]) -> int:
        return subprocess.run(
            [sys.executable, "-c", KILL_SCRIPT, wh, str(batch_file), "2"],
            env={**os.environ, **env},
            capture_output=True,
        ).returncode

    assert run({"FUNNELPULSE_KILL_AT": kill_at}) == -9
    assert run({}) == 0  # the restarted stream retries the same batch
    assert run({}) == 0  # and once more: nothing changes
    got = as_dict(read_buckets(wh))
    assert got[(T0, "shop", "all")] == (2, 1, 0, 0.0)
    assert got[(T0 + timedelta(minutes=5), "shop", "all")] == (0, 0, 2, 45.0)


@pytest.mark.slow
def test_buckets_of_silver_roll_up_to_the_batch_hourly_gold(tmp_path: Path) -> None:
    raw = write_events(generate_events(30_000, seed=5, days=2, brands=30), tmp_path / "e.csv")
    p = Pipeline(warehouse=str(tmp_path / "wh"))
    p.ingest([raw])
    p.build()
    silver = tables.read(tables.table_path(p.warehouse, tables.SILVER))
    # three stream batches in arbitrary order must add up to the same state as one
    cut = [i * silver.num_rows // 3 for i in range(4)]
    thirds = [silver.slice(cut[i], cut[i + 1] - cut[i]) for i in (2, 0, 1)]
    rows = sum(update_buckets(p.warehouse, part, batch_id=i + 1) for i, part in enumerate(thirds))
    assert rows > 0
    live = read_buckets(p.warehouse)
    con = connect()
    try:
        con.register("live", live)
        for dimension, gold, column in (
            ("brand", tables.GOLD_HOURLY_BRAND, "brand"),
            ("price_band", tables.GOLD_HOURLY_PRICE_BAND, "price_band"),
        ):
            con.register("gold", tables.read(tables.table_path(p.warehouse, gold)))
            diff = con.execute(
                f"""
                WITH l AS (
                    SELECT date_trunc('hour', bucket_start) AS h, segment,
                        SUM(views)::BIGINT v, SUM(carts)::BIGINT c, SUM(purchases)::BIGINT p,
                        round(SUM(revenue), 4) r
                    FROM live WHERE dimension = '{dimension}' GROUP BY ALL
                ), g AS (
                    SELECT window_start AS h, coalesce({column}, '(unknown)') AS segment,
                        views v, carts c, purchases p, round(revenue, 4) r FROM gold
                )
                SELECT count(*) FROM (
                    (SELECT * FROM l EXCEPT ALL SELECT * FROM g)
                    UNION ALL (SELECT * FROM g EXCEPT ALL SELECT * FROM l)
                )"""
            ).fetchall()
            assert diff == [(0,)], dimension
        shop = con.execute(
            "SELECT SUM(purchases)::BIGINT FROM live WHERE dimension = 'shop'"
        ).fetchall()
        assert shop == [(silver.filter(pc.equal(silver["event_type"], "purchase")).num_rows,)]
    finally:
        con.close()


def _rollup_differences(warehouse: str, gold_warehouse: str) -> int:
    """Rows where the live buckets summed to hours differ from batch hourly-brand gold."""
    con = connect()
    try:
        con.register("live", read_buckets(warehouse))
        con.register(
            "gold", tables.read(tables.table_path(gold_warehouse, tables.GOLD_HOURLY_BRAND))
        )
        return con.execute(
            """
            WITH l AS (
                SELECT date_trunc('hour', bucket_start) AS h, segment, SUM(views)::BIGINT v,
                    SUM(carts)::BIGINT c, SUM(purchases)::BIGINT p, round(SUM(revenue), 4) r
                FROM live WHERE dimension = 'brand' GROUP BY ALL
            ), g AS (
                SELECT window_start, coalesce(brand, '(unknown)'), views, carts, purchases,
                    round(revenue, 4) FROM gold
            )
            SELECT count(*) FROM (
                (SELECT * FROM l EXCEPT ALL SELECT * FROM g)
                UNION ALL (SELECT * FROM g EXCEPT ALL SELECT * FROM l)
            )"""
        ).fetchall()[0][0]
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.faults
def test_embedded_stream_keeps_buckets_and_a_kill_between_merge_and_commit_counts_once(
    tmp_path: Path,
) -> None:
    events = generate_events(9_000, seed=9, days=1, brands=20)
    folder = tmp_path / "incoming"
    folder.mkdir()
    third = events.num_rows // 3
    files = [
        write_events(events.slice(i * third, third if i < 2 else None), folder / f"p{i}.csv")
        for i in range(3)
    ]
    batch = Pipeline(warehouse=str(tmp_path / "batch"))
    batch.ingest(files)
    batch.build()
    wh = str(tmp_path / "wh")

    def stream(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "funnelpulse",
                "--warehouse",
                wh,
                "stream",
                "--source",
                f"files://{folder}",
                "--until-idle",
                "2",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )

    killed = stream({"FUNNELPULSE_KILL_AT": "stream.buckets_merged"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert read_buckets(wh).num_rows > 0  # the buckets were merged, the live table not
    done = stream({})
    assert done.returncode == 0, done.stderr[-2000:]
    assert _rollup_differences(wh, batch.warehouse) == 0
    silver = tables.read(tables.table_path(batch.warehouse, tables.SILVER))
    shop = read_buckets(wh).filter(pc.equal(read_buckets(wh)["dimension"], "shop"))
    assert (
        pc.sum(shop["views"]).as_py()
        == silver.filter(pc.equal(silver["event_type"], "view")).num_rows
    )
