"""Silver and gold rules on tiny hand-made inputs (real DuckDB, real Delta tables on disk)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from conftest import row, write_csv

from funnelpulse import Pipeline, tables


def build(pipeline: Pipeline, tmp_path: Path, lines: list[str]) -> Pipeline:
    pipeline.ingest([write_csv(tmp_path / "in.csv", lines)])
    pipeline.build()
    return pipeline


def by(table, *keys):  # type: ignore[no-untyped-def]
    return {tuple(r[k] for k in keys): r for r in table.to_pylist()}


def test_silver_filters_normalises_and_flags(pipeline: Pipeline, tmp_path: Path) -> None:
    lines = [
        row("2019-10-01 10:00:00", brand="  AcMe ", category_code="Furniture.Living Room.Sofa-X"),
        row("2019-10-01 10:00:01", price="0.00"),  # zero price: dropped, for every event type
        row("2019-10-01 10:00:02", price=""),  # null price: dropped
        row("2019-10-01 10:00:03", brand="", session=""),
    ]
    silver = build(pipeline, tmp_path, lines).table(tables.SILVER).to_pylist()
    assert len(silver) == 2
    first = next(r for r in silver if r["brand"] is not None)
    assert first["brand_norm"] == "acme"
    assert first["category_code_norm"] == "furniture.living_room.sofa_x"
    assert first["category_root"] == "furniture"
    assert (
        first["dq_missing_brand"],
        first["dq_missing_category"],
        first["dq_missing_session"],
    ) == (False, False, False)
    other = next(r for r in silver if r["brand"] is None)
    assert other["brand_norm"] is None and other["category_root"] is None
    assert (
        other["dq_missing_brand"],
        other["dq_missing_category"],
        other["dq_missing_session"],
    ) == (True, True, True)


def test_dedup_key_and_deterministic_survivor(pipeline: Pipeline, tmp_path: Path) -> None:
    lines = [
        row("2019-10-01 10:00:00", price="5.00"),
        row("2019-10-01 10:00:00", price="7.00"),  # same key, other price: a duplicate
        row("2019-10-01 10:00:00", etype="cart"),  # other type: kept
        row("2019-10-01 10:00:00", product=2),  # other product: kept
        row("2019-10-01 10:00:00", user=11),  # other user: kept
        row("2019-10-01 10:00:00", session="s2"),  # other session: kept
        row("2019-10-01 10:00:01"),  # other time: kept
        row("2019-10-01 10:00:02", session=""),
        row("2019-10-01 10:00:02", session=""),  # NULL sessions compare equal: a duplicate
    ]
    silver = build(pipeline, tmp_path, lines).table(tables.SILVER).to_pylist()
    assert len(silver) == 7
    survivor = [
        r
        for r in silver
        if r["event_type"] == "view"
        and r["product_id"] == 1
        and r["user_id"] == 10
        and r["user_session"] == "s1"
        and r["event_time"].second == 0
    ]
    assert [r["price"] for r in survivor] == [5.0]  # the first ingested row wins


def test_gold_null_brand_group_and_null_rates(pipeline: Pipeline, tmp_path: Path) -> None:
    lines = [
        row("2019-10-01 10:05:00", etype="view", brand=""),
        row("2019-10-01 10:06:00", etype="cart", brand="", session="s2"),
        row("2019-10-01 10:07:00", etype="purchase", brand="", price="12.50"),
        row(
            "2019-10-01 10:08:00", etype="purchase", brand="solo", price="3.00"
        ),  # 0 views, 0 carts
        row("2019-10-01 10:09:00", etype="remove_from_cart", brand="solo"),  # ignored by metrics
    ]
    gold = by(build(pipeline, tmp_path, lines).table(tables.GOLD_HOURLY_BRAND), "brand")
    assert set(gold) == {(None,), ("solo",)}
    unknown = gold[(None,)]
    assert (unknown["views"], unknown["carts"], unknown["purchases"], unknown["revenue"]) == (
        1,
        1,
        1,
        12.5,
    )
    assert unknown["view_to_cart_rate"] == 1.0 and unknown["conversion_rate"] == 1.0
    solo = gold[("solo",)]
    assert (solo["views"], solo["carts"], solo["purchases"], solo["revenue"]) == (0, 0, 1, 3.0)
    assert solo["view_to_cart_rate"] is None
    assert solo["cart_to_purchase_rate"] is None
    assert solo["conversion_rate"] is None


PRICE_EDGES = [
    ("0.01", "<10"),
    ("9.99", "<10"),
    ("10.00", "10-30"),
    ("29.99", "10-30"),
    ("30.00", "30-60"),
    ("59.99", "30-60"),
    ("60.00", "60_plus"),
    ("999.00", "60_plus"),
]


@pytest.fixture(scope="module")
def price_edges(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    """One build for every edge: each price is the only event of its own hour (hour = its index
    in PRICE_EDGES); the price bands gold shows per hour."""
    folder = tmp_path_factory.mktemp("price-edges")
    lines = [row(f"2019-10-01 {i:02d}:00:00", price=p) for i, (p, _) in enumerate(PRICE_EDGES)]
    p = build(Pipeline(warehouse=str(folder / "warehouse")), folder, lines)
    bands: dict[int, list[str]] = {}
    for r in p.table(tables.GOLD_HOURLY_PRICE_BAND).to_pylist():
        bands.setdefault(r["window_start"].hour, []).append(r["price_band"])
    return bands


@pytest.mark.parametrize(("price", "band"), PRICE_EDGES)
def test_price_band_edges(price_edges: dict[int, list[str]], price: str, band: str) -> None:
    assert price_edges[PRICE_EDGES.index((price, band))] == [band]


def test_hour_and_date_boundaries_are_utc(
    pipeline: Pipeline, tmp_path: Path, new_york_tz: None
) -> None:
    lines = [
        row("2019-11-02 23:59:59"),  # last second of a UTC day (evening before US DST ends)
        row("2019-11-03 00:00:00"),  # first second of the next UTC day
        row("2019-11-03 05:59:59", product=2),
        row("2019-11-03 06:00:00", product=2),  # exactly on an hour boundary
    ]
    p = build(pipeline, tmp_path, lines)
    hourly = sorted(
        (
            r["window_start"].isoformat(),
            r["window_end"].isoformat(),
            str(r["window_date"]),
            r["views"],
        )
        for r in p.table(tables.GOLD_HOURLY_BRAND).to_pylist()
    )
    assert hourly == [
        ("2019-11-02T23:00:00+00:00", "2019-11-03T00:00:00+00:00", "2019-11-02", 1),
        ("2019-11-03T00:00:00+00:00", "2019-11-03T01:00:00+00:00", "2019-11-03", 1),
        ("2019-11-03T05:00:00+00:00", "2019-11-03T06:00:00+00:00", "2019-11-03", 1),
        ("2019-11-03T06:00:00+00:00", "2019-11-03T07:00:00+00:00", "2019-11-03", 1),
    ]
    daily = sorted(
        (str(r["date"]), r["views"]) for r in p.table(tables.GOLD_DAILY_BRAND).to_pylist()
    )
    assert daily == [("2019-11-02", 1), ("2019-11-03", 3)]


def test_gold_schema_types(pipeline: Pipeline, tmp_path: Path) -> None:
    import pyarrow as pa

    p = build(pipeline, tmp_path, [row("2019-10-01 10:00:00")])
    schema = p.table(tables.GOLD_HOURLY_BRAND).schema
    assert schema.names[:6] == ["brand", "views", "carts", "purchases", "revenue", "window_start"]
    assert schema.field("views").type == pa.int64()
    assert schema.field("revenue").type == pa.float64()
    assert schema.field("window_start").type == pa.timestamp("us", "UTC")
    daily_category = p.table(tables.GOLD_DAILY_CATEGORY).schema
    assert daily_category.names[:2] == ["date", "category_root"]


def test_rebuild_is_idempotent_and_replaces_only_covered_dates(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    lines = [row(f"2019-10-0{d} 10:00:00") for d in (1, 2, 3)]
    p = build(pipeline, tmp_path, lines)
    first = {
        n: p.table(n).sort_by([(p.table(n).schema.names[0], "ascending")])
        for n in (tables.SILVER, tables.GOLD_DAILY_BRAND)
    }
    p.build()
    for name, before in first.items():
        after = p.table(name)
        assert after.num_rows == before.num_rows
        assert sorted(map(str, after.to_pylist())) == sorted(map(str, before.to_pylist()))

    # Add events for 10-02 only and rebuild just that date: one commit per table, other dates untouched.
    p.ingest([write_csv(tmp_path / "more.csv", [row("2019-10-02 11:00:00", etype="cart")])])
    versions = {
        n: tables.version(tables.table_path(p.warehouse, n))
        for n in (tables.SILVER, tables.GOLD_DAILY_BRAND)
    }
    files_before = set(Path(p.warehouse, tables.SILVER).glob("event_date=2019-10-01/*.parquet"))
    p.build(since=date(2019, 10, 2), until=date(2019, 10, 2))
    for name, v in versions.items():
        assert tables.version(tables.table_path(p.warehouse, name)) == v + 1
    daily = {
        str(r["date"]): (r["views"], r["carts"])
        for r in p.table(tables.GOLD_DAILY_BRAND).to_pylist()
    }
    assert daily == {"2019-10-01": (1, 0), "2019-10-02": (1, 1), "2019-10-03": (1, 0)}
    assert (
        set(Path(p.warehouse, tables.SILVER).glob("event_date=2019-10-01/*.parquet"))
        == files_before
    )


def test_build_without_bronze_says_what_to_run(pipeline: Pipeline) -> None:
    from funnelpulse.errors import WarehouseError

    with pytest.raises(WarehouseError, match="funnelpulse ingest"):
        pipeline.build()


def test_live_metric_expressions_are_the_hourly_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded stream takes its counts without parsing the model (start-up time): they
    must be what parsing the hourly-brand model gives, and a model that stops writing the
    contract's counts is parsed again."""
    import sqlglot

    from funnelpulse.engines.base import GOLD_MODELS, Model
    from funnelpulse.streaming.windows import (
        METRICS,
        metric_expressions,
        parsed_metric_expressions,
    )

    model = next(m for m in GOLD_MODELS if m.name == tables.GOLD_HOURLY_BRAND)
    fast = metric_expressions("duckdb")
    parsed = parsed_metric_expressions(model.sql, "duckdb")
    assert set(fast) == set(parsed) == set(METRICS)
    for name in METRICS:
        assert sqlglot.parse_one(fast[name], read="duckdb") == sqlglot.parse_one(
            parsed[name], read="duckdb"
        )
    own = model.sql.replace(
        "CAST(COUNT_IF(event_type = 'view') AS BIGINT) AS views",
        "CAST(COUNT_IF(event_type IN ('view')) AS BIGINT) AS views",
    )
    assert own != model.sql
    monkeypatch.setattr(Model, "template", property(lambda self: own))
    assert "IN ('view')" in metric_expressions("duckdb")["views"]
