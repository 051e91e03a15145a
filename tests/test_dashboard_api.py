"""The dashboard and the HTTP API read through the same `queries` functions: for the same date
range and segments, the dashboard's rollups, leaderboards and series equal what a running
`funnelpulse api` serves (and the totals equal the gold tables summed directly)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import sample_copy
from serving import running

from funnelpulse import tables
from funnelpulse.dashboard.data import DashboardData, Filter
from funnelpulse.localdb import connect

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory, _sample_built: Path) -> str:
    p = sample_copy(_sample_built, tmp_path_factory.mktemp("dashapi"))  # the sample, built
    return p.warehouse


@pytest.fixture(scope="module")
def client(warehouse: str) -> Iterator[httpx.Client]:
    with (
        running(warehouse, "api") as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c,
    ):
        yield c


def as_json(value: Any) -> Any:
    """What the API's JSON encoder makes of the dashboard's values (dates as text)."""
    return json.loads(json.dumps(value, default=str))


def same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, (float, int)):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want)


def get(client: httpx.Client, path: str, **params: Any) -> Any:
    answer = client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def ranges(warehouse: str) -> list[tuple[Any, Any]]:
    bounds = DashboardData(warehouse).date_bounds()
    assert bounds is not None
    first, last = bounds
    return [(first, last), (first, min(last, first + timedelta(days=6)))]


@pytest.mark.parametrize("dimension", ["brand", "category_root", "price_band"])
def test_dashboard_rollups_and_leaderboards_equal_the_api(
    client: httpx.Client, warehouse: str, ranges: list[tuple[Any, Any]], dimension: str
) -> None:
    d = DashboardData(warehouse)
    for start, end in ranges:
        served = get(client, "/api/v1/rollup", since=start, until=end, dimension=dimension)
        total = as_json(d.funnel(Filter(start, end, dimension)))
        board = as_json(d.segments(Filter(start, end), dimension).to_pylist())
        assert total["views"] > 0 and len(board) > 1
        assert same(served["total"], total)
        assert same(served["segments"], board)
        # Two segments chosen: the dashboard's filter and the API's segment parameter agree.
        chosen = [r["segment"] for r in board[:2]]
        kept = Filter(start, end, dimension, tuple(chosen))
        served = client.get(
            "/api/v1/rollup",
            params=[("since", str(start)), ("until", str(end)), ("dimension", dimension)]
            + [("segment", f"{dimension}:{v}") for v in chosen],
        ).json()
        assert same(served["total"], as_json(d.funnel(kept)))
        assert same(served["segments"], as_json(d.segments(kept, dimension).to_pylist()))
        assert [r["segment"] for r in served["segments"]] == chosen or dimension == "price_band"
        assert served["total"]["views"] == sum(r["views"] for r in board[:2])


def test_dashboard_totals_equal_the_gold_summed_directly(
    client: httpx.Client, warehouse: str, ranges: list[tuple[Any, Any]]
) -> None:
    """Not only the same code path: the right numbers (the gold table summed by hand)."""
    con = connect()
    con.register("g", tables.dataset(tables.table_path(warehouse, tables.GOLD_DAILY_BRAND)))
    for start, end in ranges:
        want = con.execute(
            "SELECT sum(views), sum(carts), sum(purchases) FROM g WHERE date BETWEEN ? AND ?",
            [start, end],
        ).fetchall()[0]
        served = get(client, "/api/v1/rollup", since=start, until=end)["total"]
        shown = DashboardData(warehouse).funnel(Filter(start, end))
        assert (served["views"], served["carts"], served["purchases"]) == tuple(want)
        assert (shown["views"], shown["carts"], shown["purchases"]) == tuple(want)


@pytest.mark.parametrize(
    ("grain", "by"), [("day", None), ("hour", None), ("day", "price_band"), ("hour", "brand")]
)
def test_dashboard_series_equal_the_api(
    client: httpx.Client,
    warehouse: str,
    ranges: list[tuple[Any, Any]],
    grain: str,
    by: str | None,
) -> None:
    d = DashboardData(warehouse)
    start, end = ranges[1]
    params: dict[str, Any] = {"since": start, "until": end, "grain": grain}
    if by:
        params["by"] = by
    served = get(client, "/api/v1/series", **params)
    shown = d.series(Filter(start, end), grain, by)
    assert served["columns"] == shown.column_names
    assert len(served["rows"]) > 0
    assert same(served["rows"], as_json(shown.to_pylist()))
    if grain == "hour" and by is None:  # every hour of the range, quiet ones as zero
        assert len(served["rows"]) == 24 * ((end - start).days + 1)
    # Kept to one brand: the Brands page's per-brand chart.
    brand = d.segments(Filter(start, end), "brand").column("segment")[0].as_py()
    served = get(
        client, "/api/v1/series", since=start, until=end, grain=grain, segment=f"brand:{brand}"
    )
    shown = d.series(Filter(start, end, "brand", (brand,)), grain)
    assert same(served["rows"], as_json(shown.to_pylist()))


def test_rollup_and_series_refuse_bad_parameters_with_a_message(client: httpx.Client) -> None:
    for path, params, words in [
        ("/api/v1/rollup", {"dimension": "colour"}, "dimension"),
        ("/api/v1/rollup", {"since": "2019-11-30", "until": "2019-10-01"}, "Swap"),
        ("/api/v1/rollup", {"segment": "brand"}, "dimension:value"),
        ("/api/v1/rollup", {"dimension": "brand", "segment": "price_band:<10"}, "dimension"),
        ("/api/v1/series", {"grain": "week"}, "grain"),
        ("/api/v1/series", {"segment": ["brand:a", "price_band:<10"]}, "one dimension"),
        ("/api/v1/series", {"colour": "red"}, "Unknown parameter"),
    ]:
        answer = client.get(path, params=params)
        assert answer.status_code == 400, (path, params, answer.text)
        assert words in answer.json()["error"], answer.json()
