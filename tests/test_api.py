"""The HTTP API through httpx against a running `funnelpulse api`: the same numbers as the CLI's
JSON on the same warehouse, the token, a clear 400 for every kind of bad parameter, CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import sample_copy
from serving import running

from funnelpulse import Pipeline, tables
from funnelpulse.cli import cli
from funnelpulse.localdb import connect

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory, _sample_built: Path) -> str:
    p = sample_copy(_sample_built, tmp_path_factory.mktemp("api"))  # the sample, built
    p.detect()
    return p.warehouse


@pytest.fixture(scope="module")
def client(warehouse: str) -> Iterator[httpx.Client]:
    with (
        running(warehouse, "api", env={"FUNNELPULSE_API_TOKEN": TOKEN}) as port,
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ) as c,
    ):
        yield c


def same(got: object, want: object) -> bool:
    """Equal, floats to 1e-9 relative: a parallel sum of prices may differ in its last bit from
    one run to the next (the CLI against itself does too)."""
    if isinstance(want, float) and isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9)
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    return got == want


def cli_json(warehouse: str, *args: str) -> object:
    done = CliRunner().invoke(cli, ["--warehouse", warehouse, *args], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return json.loads(done.output)


@pytest.mark.parametrize(
    "params, flags",
    [
        ({}, []),
        ({"top": 3}, ["--top", "3"]),
        (
            {"since": "2019-10-01", "until": "2019-10-31"},
            ["--since", "2019-10-01", "--until", "2019-10-31"],
        ),
    ],
)
def test_report_equals_the_cli_json(
    client: httpx.Client, warehouse: str, params: dict[str, object], flags: list[str]
) -> None:
    response = client.get("/api/v1/report", params=params)
    assert response.status_code == 200, response.text
    assert same(response.json(), cli_json(warehouse, "report", "--format", "json", *flags))
    versions = response.headers["FunnelPulse-Table-Versions"]
    assert (
        f"gold_funnel_daily_brand={tables.version(tables.table_path(warehouse, tables.GOLD_DAILY_BRAND))}"
        in versions
    )


@pytest.mark.parametrize(
    "params, flags",
    [
        ({}, []),
        (
            {"by": "brand", "since": "2019-10-01", "until": "2019-10-01"},
            ["--by", "brand", "--since", "2019-10-01", "--until", "2019-10-01"],
        ),
        (
            {"by": "price_band", "window": "2h", "same_product": "true", "by_user": "true"},
            ["--by", "price_band", "--window", "2h", "--same-product", "--by-user"],
        ),
    ],
)
def test_funnel_equals_the_cli_json(
    client: httpx.Client, warehouse: str, params: dict[str, object], flags: list[str]
) -> None:
    response = client.get("/api/v1/funnel", params=params)
    assert response.status_code == 200, response.text
    assert same(response.json(), cli_json(warehouse, "funnel", "--format", "json", *flags))
    assert "silver_events=" in response.headers["FunnelPulse-Table-Versions"]


def test_table_pages_together_equal_the_table(client: httpx.Client, warehouse: str) -> None:
    name = tables.GOLD_DAILY_BRAND
    con = connect()
    con.register("t", tables.dataset(tables.table_path(warehouse, name)))
    expected = con.sql(
        "SELECT count(*) FROM t WHERE brand = 'runail' AND date BETWEEN '2019-10-01' AND '2019-12-31'"
    ).fetchall()[0][0]
    rows, offset, pages = [], 0, 0
    while offset is not None:
        page = client.get(
            f"/api/v1/tables/{name}",
            params={
                "segment": "brand:runail",
                "since": "2019-10-01",
                "until": "2019-12-31",
                "limit": 3,
                "offset": offset,
            },
        ).json()
        assert page["version"] == tables.version(tables.table_path(warehouse, name))
        assert page["truncated"] == (page["next_offset"] is not None)
        rows += page["rows"]
        offset, pages = page["next_offset"], pages + 1
    assert expected > 3 and len(rows) == expected and pages == -(-expected // 3)
    assert {r["brand"] for r in rows} == {"runail"}
    assert len({(r["date"], r["brand"]) for r in rows}) == expected  # no row twice across pages


@pytest.mark.parametrize("name", [tables.GOLD_DAILY_BRAND, tables.GOLD_HOURLY_PRICE_BAND])
def test_column_shaped_pages_equal_the_row_pages(
    client: httpx.Client, warehouse: str, name: str
) -> None:
    """`shape=columns` carries the same rows as the default shape, column by column, page by
    page (pages of 25), with the same version and paging fields."""
    offset, pages, total = 0, 0, 0
    dates = {"since": "2019-10-01", "until": "2019-10-31"}
    while offset is not None:
        params: dict[str, Any] = {**dates, "limit": 25, "offset": offset}
        rows = client.get(f"/api/v1/tables/{name}", params=params).json()
        cols = client.get(f"/api/v1/tables/{name}", params={**params, "shape": "columns"}).json()
        assert "rows" not in cols and "data" not in rows
        for key in ("table", "version", "columns", "offset", "truncated", "next_offset"):
            assert cols[key] == rows[key], key
        assert list(cols["data"]) == rows["columns"]
        n = len(rows["rows"])
        assert {len(v) for v in cols["data"].values()} == {n}
        rebuilt = [{c: cols["data"][c][i] for c in rows["columns"]} for i in range(n)]
        assert same(rebuilt, rows["rows"])
        offset, pages, total = rows["next_offset"], pages + 1, total + n
    assert total > 0 and pages > 1  # paging covered, not one page


def test_table_list_names_versions_and_rows(client: httpx.Client, warehouse: str) -> None:
    listed = {t["name"]: t for t in client.get("/api/v1/tables").json()["tables"]}
    assert tables.BRONZE not in listed  # raw events are for SQL, not the API
    for name in (tables.GOLD_DAILY_BRAND, tables.GOLD_SESSION_FUNNEL, tables.ANOMALIES):
        path = tables.table_path(warehouse, name)
        assert listed[name]["version"] == tables.version(path)
        assert listed[name]["rows"] == tables.dataset(path).count_rows()


def test_anomalies_equal_the_table(client: httpx.Client, warehouse: str) -> None:
    stored = tables.read(tables.table_path(warehouse, tables.ANOMALIES))
    body = client.get("/api/v1/anomalies", params={"limit": 10_000}).json()
    assert len(body["rows"]) == stored.num_rows and body["truncated"] is False
    assert sorted(r["anomaly_id"] for r in body["rows"]) == sorted(
        stored.column("anomaly_id").to_pylist()
    )


def test_incidents_and_live_buckets_say_what_exists(client: httpx.Client, warehouse: str) -> None:
    incidents = client.get("/api/v1/incidents")
    assert incidents.status_code == 200
    body = incidents.json()
    # detect records the lasting incidents table; nothing has streamed or alerted yet
    assert set(body) == {"incidents"} and body["incidents"]["table"] == tables.INCIDENTS
    stored = tables.read(tables.table_path(warehouse, tables.INCIDENTS))
    assert sorted(r["incident_id"] for r in body["incidents"]["rows"]) == sorted(
        stored.column("incident_id").to_pylist()
    )
    live = client.get("/api/v1/live/buckets")
    assert live.status_code == 404
    assert "funnelpulse stream" in live.json()["error"]


@pytest.mark.parametrize("how", ["format", "accept"])
def test_csv_round_trips(client: httpx.Client, how: str) -> None:
    url = f"/api/v1/tables/{tables.GOLD_DAILY_BRAND}"
    params = {"limit": 50}
    as_json = client.get(url, params=params).json()
    response = (
        client.get(url, params={**params, "format": "csv"})
        if how == "format"
        else client.get(url, params=params, headers={"Accept": "text/csv"})
    )
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["FunnelPulse-Truncated"] == "true"
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    assert len(parsed) == 50
    for got, want in zip(parsed, as_json["rows"], strict=True):
        assert got == {k: "" if v is None else str(v) for k, v in want.items()}


def test_funnel_csv_equals_the_cli_csv(client: httpx.Client, warehouse: str) -> None:
    done = CliRunner().invoke(
        cli, ["--warehouse", warehouse, "funnel", "--by", "brand", "--format", "csv"]
    )
    response = client.get("/api/v1/funnel", params={"by": "brand", "format": "csv"})
    got = list(csv.DictReader(io.StringIO(response.text)))
    want = list(csv.DictReader(io.StringIO(done.output)))
    assert [r.keys() for r in got] == [r.keys() for r in want] and len(got) > 1
    for g, w in zip(got, want, strict=True):
        for key in w:
            assert g[key] == w[key] or math.isclose(float(g[key]), float(w[key]), rel_tol=1e-9)


def test_every_path_but_healthz_needs_the_token(client: httpx.Client) -> None:
    base = str(client.base_url)
    for path in ("/api/v1/report", "/api/v1/tables", "/docs", "/openapi.json"):
        assert httpx.get(base + path).status_code == 401
        assert httpx.get(base + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(base + "/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "path, params, words",
    [
        ("/api/v1/report", {"since": "2019-13-01"}, "since"),
        ("/api/v1/report", {"since": "2019-10-05", "until": "2019-10-01"}, "Swap them"),
        ("/api/v1/report", {"top": "0"}, "top"),
        ("/api/v1/report", {"top": "many"}, "top"),
        ("/api/v1/report", {"colour": "red"}, "Unknown parameter colour"),
        ("/api/v1/funnel", {"by": "shoe_size"}, "by"),
        ("/api/v1/funnel", {"window": "soon"}, "not a duration"),
        ("/api/v1/funnel", {"same_product": "perhaps"}, "same_product"),
        ("/api/v1/tables/no_such_table", {}, "Unknown table"),
        (f"/api/v1/tables/{tables.GOLD_DAILY_BRAND}", {"limit": "0"}, "limit"),
        (f"/api/v1/tables/{tables.GOLD_DAILY_BRAND}", {"limit": "10001"}, "limit"),
        (f"/api/v1/tables/{tables.GOLD_DAILY_BRAND}", {"offset": "-1"}, "offset"),
        (f"/api/v1/tables/{tables.GOLD_DAILY_BRAND}", {"segment": "brand"}, "dimension:value"),
        (
            f"/api/v1/tables/{tables.GOLD_DAILY_BRAND}",
            {"segment": "colour:red"},
            "no 'colour' segments",
        ),
        (f"/api/v1/tables/{tables.GOLD_DAILY_BRAND}", {"format": "xml"}, "format"),
        (f"/api/v1/tables/{tables.GOLD_DAILY_BRAND}", {"shape": "cols"}, "shape"),
        ("/api/v1/report", {"format": "csv"}, "no CSV form"),
    ],
)
def test_bad_parameters_get_a_400_that_says_what_to_fix(
    client: httpx.Client, path: str, params: dict[str, str], words: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error
    assert "Traceback" not in error and "duckdb" not in error.lower()


def test_serving_beyond_loopback_needs_a_token(
    warehouse: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUNNELPULSE_API_TOKEN", raising=False)
    done = CliRunner().invoke(cli, ["--warehouse", warehouse, "api", "--host", "0.0.0.0"])
    assert done.exit_code == 1
    assert "needs FUNNELPULSE_API_TOKEN" in done.output


def test_report_reads_one_code_path(warehouse: str) -> None:
    """The library's report (what the CLI prints) is the queries module's, number for number."""
    from funnelpulse import queries

    assert Pipeline(warehouse=warehouse).report() == queries.report(warehouse).data
    assert Path(warehouse).is_dir()


def test_a_request_past_the_timeout_is_a_504_and_cors_is_off(warehouse: str) -> None:
    from fastapi.testclient import TestClient

    from funnelpulse.api import create_app

    slow = TestClient(create_app(warehouse, token=None, timeout_s=0.001))
    response = slow.get("/api/v1/funnel", params={"by": "brand"})
    assert response.status_code == 504
    assert "timeout" in response.json()["error"]
    assert slow.get("/healthz").status_code == 200  # and it goes on answering
    fine = TestClient(create_app(warehouse, token=None, timeout_s=60))
    crossed = fine.get("/api/v1/tables", headers={"Origin": "https://elsewhere.example"})
    assert crossed.status_code == 200
    assert not [h for h in crossed.headers if h.lower().startswith("access-control-")]


def test_pages_encoded_by_the_database_equal_the_python_encoding(tmp_path: Path) -> None:
    """The API's JSON pages come from the database's encoder: for every value kind a table holds
    (times with and without a fraction or a zone, NaN, nulls, quotes, non-ASCII text) they decode
    to what Python's encoding of the same rows decodes to; a type it does not cover (a decimal)
    falls back to Python's encoding."""
    from datetime import UTC, date, datetime
    from decimal import Decimal

    import pyarrow as pa

    from funnelpulse import queries

    warehouse = str(tmp_path / "warehouse")
    odd = pa.table(
        {
            "date": pa.array([date(2019, 10, 1), date(2019, 10, 2), None, date(2019, 10, 3)]),
            "at": pa.array(
                [
                    datetime(2019, 10, 1, 0, 0, 0, tzinfo=UTC),
                    datetime(2019, 10, 1, 23, 59, 59, 250_000, tzinfo=UTC),
                    None,
                    datetime(2019, 10, 2, 1, 2, 3, 7, tzinfo=UTC),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "plain_at": pa.array(
                [datetime(2019, 10, 1, 5), datetime(2019, 10, 1, 5, 0, 0, 500), None, None],
                pa.timestamp("us"),
            ),
            "brand": ['a"b\\c', "é ü 中", None, "line\nbreak\ttab"],
            "views": pa.array([0, -3, None, 2**62], pa.int64()),
            "rate": [0.1, float("nan"), None, 1e22],
            "small": [2e-7, 1 / 3, None, 100.0],
            "flag": [True, False, None, True],
        }
    )
    tables.write(tables.table_path(warehouse, "odd"), odd)
    money = pa.table(
        {
            "date": [date(2019, 10, 1), date(2019, 10, 2), date(2019, 10, 3)],
            "price": pa.array([Decimal("12.50"), Decimal("-0.01"), None]),
        }
    )
    tables.write(tables.table_path(warehouse, "money"), money)
    for name in ("odd", "money"):
        for since, limit, offset in ((None, 10, 0), (date(2019, 10, 2), 1, 0), (None, 2, 1)):
            page = queries.rows(
                warehouse, name, since=since, limit=limit, offset=offset, among=(name,)
            ).data
            encoded = queries.rows_json(
                warehouse, name, since=since, limit=limit, offset=offset, among=(name,)
            ).data
            want = json.loads(json.dumps(page.rows, default=str))
            got = json.loads(encoded.rows_json)
            assert len(got) == encoded.count == len(page.rows) > 0
            assert (encoded.truncated, encoded.next_offset) == (page.truncated, page.next_offset)
            assert [list(r) for r in got] == [list(r) for r in want]  # same keys, same order
            # The column shape: the same values, column by column, in the same row order.
            columns = queries.rows_json(
                warehouse,
                name,
                since=since,
                limit=limit,
                offset=offset,
                among=(name,),
                shape="columns",
            ).data
            data = json.loads(columns.rows_json)
            assert list(data) == page.columns and columns.count == len(page.rows)
            assert (columns.truncated, columns.next_offset) == (page.truncated, page.next_offset)
            rebuilt = [{c: data[c][i] for c in data} for i in range(columns.count)]
            for g in (got, rebuilt):
                for gr, w in zip(g, want, strict=True):
                    for key in w:
                        nan = isinstance(w[key], float) and math.isnan(w[key])
                        assert (nan and math.isnan(gr[key])) or gr[key] == w[key], (name, key)


def test_a_request_past_its_timeout_interrupts_its_query(
    warehouse: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deliberately slow query (minutes of work) behind /api/v1/report: past the 1 s timeout
    the client gets its 504 and the query itself is interrupted, so its worker is free again
    within moments and the next request is answered."""
    import threading
    import time

    import duckdb
    from fastapi.testclient import TestClient

    from funnelpulse import queries
    from funnelpulse.api import create_app
    from funnelpulse.localdb import connect

    started = threading.Event()
    outcome: list[str] = []

    def slow_report(*args: object, **kwargs: object) -> object:
        con = connect()
        started.set()
        try:
            con.execute("SELECT count(*) FROM range(1000000000000) a, range(10) b").fetchall()
            outcome.append("finished")
        except duckdb.InterruptException:
            outcome.append("interrupted")
            raise
        return queries.Read({})

    monkeypatch.setattr(queries, "report", slow_report)
    app = create_app(warehouse, token=None, timeout_s=1.0)
    with TestClient(app) as client:
        response = client.get("/api/v1/report")
        assert response.status_code == 504 and "timeout" in response.json()["error"]
        assert started.is_set()
        deadline = time.monotonic() + 20
        while app.state.reads_running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.reads_running == 0  # the worker is free, not still counting
        assert outcome == ["interrupted"]
        monkeypatch.undo()
        assert client.get("/api/v1/report").status_code == 200
