"""HTTP API benchmark: the API against the same query run in-process by DuckDB on the same
tables, in the same run, interleaved; then 50 concurrent clients at steady load.

Cases (the issue's bar: the API within 1.2x of in-process DuckDB):
  funnel-day   a day of `funnel --by brand` (GET /api/v1/funnel?by=brand&since=D&until=D) vs
               funnel.query in process with silver registered once (warm) and opened per call
  gold-month   a month of gold_funnel_daily_brand (GET /api/v1/tables/...?since&until) vs the
               same SELECT on DuckDB over the registered table, fetched as Python rows; also
               asked with shape=columns (column name to values), decoded by the client

Usage: python benchmarks/bench_api.py [--rows 1000000] [--days 61] [--repeat 15]
       [--clients 50] [--seconds 20] [--warehouse DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

from funnelpulse import Pipeline, tables
from funnelpulse import funnel as fn
from funnelpulse.localdb import connect

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from serving import running  # noqa: E402

START = date(2019, 10, 1)


def prepare(rows: int, days: int) -> str:
    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    events = folder / "events.parquet"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "funnelpulse",
            "-q",
            "generate",
            "--rows",
            str(rows),
            "--out",
            str(events),
            "--seed",
            "7",
            "--start",
            START.isoformat(),
            "--days",
            str(days),
            "--brands",
            "250",
        ],
        check=True,
    )
    p = Pipeline(warehouse=str(folder / "warehouse"))
    p.ingest([events])
    p.build()
    return p.warehouse


def timed(call) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=61)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warehouse", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    warehouse = args.warehouse or prepare(args.rows, args.days)
    made = "given" if args.warehouse else f"{args.rows:,} generated events over {args.days} days"
    rows = tables.dataset(tables.table_path(warehouse, tables.SILVER)).count_rows()
    print(
        f"warehouse {warehouse} ({made}; {rows:,} silver rows; prepared in "
        f"{time.perf_counter() - started:.0f} s)"
    )
    day = START + timedelta(days=14)
    month_end = START + timedelta(days=30)

    spec = fn.FunnelSpec(by="brand")
    silver = tables.dataset(tables.table_path(warehouse, tables.SILVER))
    gold_path = tables.table_path(warehouse, tables.GOLD_DAILY_BRAND)
    con = connect()
    con.register("t", tables.dataset(gold_path))
    columns = tables.dataset(gold_path).schema.names
    month_sql = (
        f"SELECT * FROM t WHERE date >= DATE '{START}' AND date <= DATE '{month_end}' "
        "ORDER BY date, brand LIMIT 10001"
    )

    cases = {
        "funnel-day": (
            ("/api/v1/funnel", {"by": "brand", "since": day.isoformat(), "until": day.isoformat()}),
            {
                "in-process, warm": lambda: fn.query(
                    warehouse, spec, day, day, memory_mb=None, silver=silver
                ),
                "in-process, opens the table": lambda: fn.query(
                    warehouse, spec, day, day, memory_mb=None
                ),
            },
        ),
        "gold-month": (
            (
                f"/api/v1/tables/{tables.GOLD_DAILY_BRAND}",
                {"since": START.isoformat(), "until": month_end.isoformat(), "limit": 10_000},
            ),
            {
                "in-process, warm": lambda: con.execute(month_sql).fetchall(),
                "in-process + JSON encoding": lambda: json.dumps(
                    [dict(zip(columns, r, strict=True)) for r in con.execute(month_sql).fetchall()],
                    default=str,
                ),
            },
        ),
    }
    with (
        running(warehouse, "api") as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http,
    ):
        for name, ((path, params), references) in cases.items():

            def api(
                path: str = path,
                params: dict = params,  # type: ignore[type-arg]
                decode: bool = True,
            ) -> None:
                response = http.get(path, params=params)
                response.raise_for_status()
                if decode:
                    response.json()

            api()  # warm both sides once
            for ref in references.values():
                ref()
            times: dict[str, list[float]] = {"API": [], **{k: [] for k in references}}
            cacheable = "limit" in params
            if cacheable:  # pages are kept encoded per table version: measure a fresh one too
                times["API, page not cached"] = []
                times["API, not cached, body not decoded"] = []
                times["API, shape=columns, not cached"] = []
                times["API, shape=columns, cached"] = []
            for n in range(args.repeat):  # interleaved: each round runs every side once
                times["API"].append(timed(api))
                if cacheable:  # a new request each time (one row fewer: the same scan)
                    fresh = {**params, "limit": int(params["limit"]) - 1 - 2 * n}
                    times["API, page not cached"].append(timed(lambda f=fresh, p=path: api(p, f)))
                    bare = {**params, "limit": int(params["limit"]) - 2 - 2 * n}
                    times["API, not cached, body not decoded"].append(
                        timed(lambda f=bare, p=path: api(p, f, decode=False))
                    )
                    shaped = {**params, "limit": int(params["limit"]) - 3 - 2 * n}
                    shaped["shape"] = "columns"
                    times["API, shape=columns, not cached"].append(
                        timed(lambda f=shaped, p=path: api(p, f))
                    )
                    again = {**params, "shape": "columns"}
                    times["API, shape=columns, cached"].append(
                        timed(lambda f=again, p=path: api(p, f))
                    )
                for label, ref in references.items():
                    times[label].append(timed(ref))
            medians = {k: statistics.median(v) for k, v in times.items()}
            for label, value in medians.items():
                ratio = "".join(
                    f"  {api_label} / this = {medians[api_label] / value:.2f}x"
                    for api_label in medians
                    if api_label.startswith("API") and not label.startswith("API")
                )
                print(f"{name:<11} {label:<34} median {value * 1000:8.1f} ms{ratio}")

        # 50 clients at steady load: each asks for a month of gold in a loop for `seconds`.
        path, params = cases["gold-month"][0]
        latencies: list[float] = []
        failures: list[str] = []
        guard = threading.Lock()
        stop = time.monotonic() + args.seconds

        def client() -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as own:
                while time.monotonic() < stop:
                    t0 = time.perf_counter()
                    try:
                        response = own.get(path, params=params)
                        ok = response.status_code == 200 and len(response.json()["rows"]) > 0
                    except httpx.HTTPError as exc:
                        ok, response = False, exc  # type: ignore[assignment]
                    if not ok and isinstance(response, httpx.Response):
                        response = f"{response.status_code} {response.text[:200]}"  # type: ignore[assignment]
                    with guard:
                        (latencies if ok else failures).append(
                            time.perf_counter() - t0 if ok else repr(response)
                        )

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        health = []
        while any(t.is_alive() for t in threads):
            health.append(timed(lambda: http.get("/healthz").raise_for_status()))
            time.sleep(0.5)
        for t in threads:
            t.join()
        latencies.sort()
        print(
            f"{args.clients} clients x {args.seconds:.0f} s on gold-month: {len(latencies):,} answers "
            f"({len(latencies) / args.seconds:,.1f}/s), {len(failures)} failed; latency p50 "
            f"{latencies[len(latencies) // 2] * 1000:.0f} ms, p95 "
            f"{latencies[int(len(latencies) * 0.95)] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; "
            f"/healthz answered {len(health)} times under load (max {max(health) * 1000:.0f} ms)"
        )
        for failure in sorted(set(failures))[:5]:
            print(f"  failed: {failure}")


if __name__ == "__main__":
    main()
