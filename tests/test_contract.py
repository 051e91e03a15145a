"""The one contract: every place that bands prices or computes the funnel agrees with it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import row, write_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from funnelpulse import Pipeline, contract
from funnelpulse.engines.base import MODELS
from funnelpulse.generate import price_band


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
