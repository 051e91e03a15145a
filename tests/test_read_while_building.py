"""A table rewritten by a build while HTTP and SQL clients read it: every answer is the table's
old version or its new one, never a mix, never an error."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from serving import running

from funnelpulse import Pipeline, tables
from funnelpulse.localdb import connect
from funnelpulse.pipeline import sample_files

httpx = pytest.importorskip("httpx")
psycopg = pytest.importorskip("psycopg")
pytest.importorskip("fastapi")

QUERY = "SELECT count(*), sum(views), sum(purchases) FROM gold_funnel_daily_brand"


def duck(warehouse: str) -> tuple[int, int, int]:
    con = connect()
    con.register(
        "gold_funnel_daily_brand",
        tables.dataset(tables.table_path(warehouse, tables.GOLD_DAILY_BRAND)),
    )
    count, views, purchases = con.sql(QUERY).fetchall()[0]
    return int(count), int(views), int(purchases)


@pytest.mark.slow
def test_readers_see_the_old_or_the_new_table_never_an_error(tmp_path) -> None:
    october, december = sample_files()
    p = Pipeline(warehouse=str(tmp_path / "warehouse"))
    p.ingest([october])
    p.build()
    old = duck(p.warehouse)
    p.ingest([december])  # bronze grows: the next build rewrites every gold table
    seen: list[tuple[int, int, int]] = []
    during, errors = 0, []
    with (
        running(p.warehouse, "api") as api_port,
        running(p.warehouse, "sql-server") as sql_port,
        httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=60) as http,
        psycopg.connect(
            f"host=127.0.0.1 port={sql_port} user=reader dbname=funnelpulse", autocommit=True
        ) as sql,
    ):
        build = subprocess.Popen(
            [sys.executable, "-m", "funnelpulse", "--warehouse", p.warehouse, "-q", "build"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            while True:
                running_now = build.poll() is None
                try:
                    row = sql.execute(QUERY).fetchall()[0]
                    seen.append((int(row[0]), int(row[1]), int(row[2])))
                    page = http.get(
                        "/api/v1/tables/gold_funnel_daily_brand", params={"limit": 10_000}
                    )
                    assert page.status_code == 200, page.text
                    rows = page.json()["rows"]
                    seen.append(
                        (
                            len(rows),
                            sum(r["views"] for r in rows),
                            sum(r["purchases"] for r in rows),
                        )
                    )
                except (psycopg.Error, AssertionError, httpx.HTTPError) as exc:
                    errors.append(repr(exc))
                during += running_now
                if not running_now:
                    break
                time.sleep(0.01)
        finally:
            build.wait(timeout=600)
        assert build.returncode == 0, build.stderr.read().decode()
    new = duck(p.warehouse)
    assert new != old
    assert errors == []
    assert during >= 3, "the build ended before the readers got going: nothing was raced"
    assert set(seen) <= {old, new}, set(seen) - {old, new}
    assert seen[-1] == new
