"""The one contract: every place that bands prices or computes the funnel agrees with it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from conftest import row, write_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from funnelpulse import Pipeline, contract, tables
from funnelpulse.anomaly import annotations, incident_store
from funnelpulse.anomaly.incidents import group_incidents
from funnelpulse.engines.base import MODELS
from funnelpulse.generate import price_band


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=1e6, allow_nan=False), min_size=1))
def test_sql_and_numpy_price_bands_agree(prices: list[float]) -> None:
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT {contract.price_band_sql('p')} FROM unnest(?::DOUBLE[]) AS t(p)", [prices]
    ).fetchall()
    in_sql = [r[0] for r in rows]
    in_numpy = [contract.BAND_LABELS[i] for i in price_band(np.array(prices))]
    assert in_sql == in_numpy


def test_band_edges_belong_to_the_upper_band() -> None:
    con = duckdb.connect()
    got = con.execute(
        f"SELECT {contract.price_band_sql('p')} FROM unnest([9.99, 10.0, 30.0, 60.0]) AS t(p)"
    ).fetchall()
    assert [r[0] for r in got] == ["<10", "10-30", "30-60", "60_plus"]


def test_models_have_no_unfilled_placeholders_and_every_metric() -> None:
    for model in MODELS:
        sql = model.sql
        assert "{{" not in sql, model.name
        if model.name.startswith("gold_"):
            for name in (*contract.COUNTS, *contract.RATES):
                assert f"AS {name}" in sql, (model.name, name)


def test_unknown_fragment_is_refused() -> None:
    with pytest.raises(KeyError, match="nope"):
        contract.render("SELECT {{ nope }}")


def test_rollup_recomputes_rates_from_sums() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE g AS SELECT * FROM (VALUES (10, 5, 1, 2.5), (30, 0, 0, 0.0)) "
        "AS t(views, carts, purchases, revenue)"
    )
    row = con.execute(f"SELECT {contract.rollup_sql(revenue_digits=2)} FROM g").fetchone()
    assert row is not None
    views, carts, purchases, revenue, v2c, c2p, conv = row
    assert (views, carts, purchases, revenue) == (40, 5, 1, 2.5)
    assert v2c == pytest.approx(5 / 40) and c2p == pytest.approx(1 / 5)
    assert conv == pytest.approx(1 / 40)
    assert contract.rates({"views": 0, "carts": 0, "purchases": 0}) == {
        "view_to_cart_rate": None,
        "cart_to_purchase_rate": None,
        "conversion_rate": None,
    }


def test_a_new_metric_is_one_edit_of_the_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk-through of the README's claim: a count and a rate added to the contract appear in
    every gold table the build writes and in the report's roll-up, with no other edit."""
    monkeypatch.setitem(
        contract.COUNTS, "removals", "CAST(COUNT_IF(event_type = 'remove_from_cart') AS BIGINT)"
    )
    monkeypatch.setitem(contract.RATES, "removal_rate", ("removals", "carts"))
    p = Pipeline(warehouse=str(tmp_path / "wh"))
    p.ingest(
        [
            write_csv(
                tmp_path / "e.csv",
                [
                    row("2019-10-01 10:00:00"),
                    row("2019-10-01 10:01:00", etype="cart"),
                    row("2019-10-01 10:02:00", etype="cart", product=2),
                    row("2019-10-01 10:03:00", etype="remove_from_cart"),
                ],
            )
        ]
    )
    p.build()
    for model in MODELS:
        if model.name.startswith("gold_funnel"):
            gold = p.table(model.name).to_pylist()
            assert [(r["removals"], r["removal_rate"]) for r in gold] == [(1, 0.5)], model.name
    assert "removals" in p.report()["funnel"]


# -- every table's schema -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A warehouse where each table written from Arrow was written by its own writer: ingest (a
    bad row too), build, detect, a file stream, a live incident and an alert delivery."""
    from datetime import UTC, datetime

    from funnelpulse.anomaly.alertlog import AlertLog
    from funnelpulse.anomaly.live_incidents import LiveIncident, write_incidents
    from funnelpulse.engines.base import StreamOptions

    root = tmp_path_factory.mktemp("contract")
    p = Pipeline(warehouse=str(root / "wh"))
    # 20 hours of 50 views and 5 purchases, but none at 10:00: the reference method flags it.
    lines = [
        row(f"2019-10-01 {h:02d}:{m:02d}:00", etype=etype, user=m)
        for h in range(20)
        for m in range(50)
        for etype in ("view", "purchase")
        if etype == "view" or (m < 5 and h != 10)
    ]
    p.ingest([write_csv(root / "e.csv", [*lines, row("2019-10-01 04:00:00", price="x")])])
    p.build()
    found = p.detect(method="reference").anomalies
    assert found.num_rows > 0
    # The lasting incidents table, as detect --alert records it from these anomalies.
    incident_store.record(p.warehouse, group_incidents(found.to_pylist()))
    annotations.add(
        p.warehouse,
        datetime(2019, 10, 1, 8, tzinfo=UTC),
        datetime(2019, 10, 1, 9, tzinfo=UTC),
        "planned outage",
        "brand:acme",
    )
    incoming = root / "incoming"
    incoming.mkdir()
    write_csv(incoming / "live.csv", [row("2019-10-02 10:00:00"), row("2019-10-02 10:01:00")])
    p.stream(f"files://{incoming}", options=StreamOptions(until_idle_s=1))
    at = datetime(2019, 10, 2, 10, tzinfo=UTC)
    write_incidents(
        p.warehouse,
        [
            LiveIncident(
                "shop:all:20191002T10", "shop", "all", "open", "conversion", "drop", "high",
                at, at, at, None, at, 5.0, 5, 1.0, 9.0, 100.0, -4.0, 1e-5, 8.0, 40.0,
            )
        ],
    )  # fmt: skip
    with AlertLog(p.warehouse) as journal:
        journal.record(
            {
                "incident_id": "shop:all:20191002T10",
                "sink": "file",
                "status": "sent",
                "attempts": 1,
                "error": None,
                "severity": "high",
                "dimension": "shop",
                "segment": "all",
                "incident_start": at,
                "incident_end": at,
                "message": "conversion dropped",
                "recorded_at": at,
            }
        )
    return p.warehouse


@pytest.mark.parametrize("name", sorted(tables.TABLE_SCHEMAS))
def test_each_written_table_has_the_contract_schema(written: str, name: str) -> None:
    """The Delta table on disk has exactly the contract's columns, order and types: a writer that
    drifts (a column added, renamed, retyped or moved) fails here, not in a reader."""
    from deltalake import DeltaTable

    from funnelpulse import tables

    table = DeltaTable(tables.table_path(written, name))
    on_disk = pa.schema(table.schema().to_arrow())
    expected = tables.TABLE_SCHEMAS[name]
    assert on_disk.names == expected.names
    assert on_disk.equals(expected), f"{name}:\n{on_disk}\n!=\n{expected}"
    assert table.to_pyarrow_table().num_rows > 0, f"{name} was written empty"
