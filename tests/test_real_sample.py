"""The bundled real REES46 sample end to end, checked against plain Python (csv + gzip)."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from funnelpulse import Pipeline, tables


def _python_gold(files: list[Path]) -> tuple[int, int, dict]:  # type: ignore[type-arg]
    """Silver rules and the hourly-brand metrics, written independently of the SQL models."""
    seen = set()
    raw = silver = 0
    gold: dict = defaultdict(lambda: [0, 0, 0, 0.0])  # type: ignore[type-arg]
    for path in files:
        with gzip.open(path, "rt", newline="") as handle:
            for rec in csv.DictReader(handle):
                raw += 1
                price = float(rec["price"]) if rec["price"] else None
                if price is None or price <= 0:
                    continue
                key = (
                    rec["event_time"],
                    rec["user_id"],
                    rec["user_session"],
                    rec["product_id"],
                    rec["event_type"],
                )
                if key in seen:
                    continue
                seen.add(key)
                silver += 1
                ts = datetime.strptime(rec["event_time"], "%Y-%m-%d %H:%M:%S UTC").replace(
                    tzinfo=UTC
                )
                hour = ts.replace(minute=0, second=0)
                brand = rec["brand"].strip().lower() or None
                cell = gold[(hour, brand)]
                if rec["event_type"] == "view":
                    cell[0] += 1
                elif rec["event_type"] == "cart":
                    cell[1] += 1
                elif rec["event_type"] == "purchase":
                    cell[2] += 1
                    cell[3] += price
    return raw, silver, gold


def test_real_sample_matches_independent_computation(
    demo_warehouse: Pipeline, real_sample: list[Path]
) -> None:
    raw, silver_rows, expected = _python_gold(real_sample)
    assert raw == 22_283 + 20_286  # documented sizes of the two samples (SOURCES.md)
    assert demo_warehouse.table(tables.BRONZE).num_rows == raw
    assert demo_warehouse.table(tables.QUARANTINE).num_rows == 0
    assert demo_warehouse.table(tables.SILVER).num_rows == silver_rows

    gold = demo_warehouse.table(tables.GOLD_HOURLY_BRAND).to_pylist()
    assert len(gold) == len(expected)
    for r in gold:
        views, carts, purchases, revenue = expected[(r["window_start"], r["brand"])]
        assert (r["views"], r["carts"], r["purchases"]) == (views, carts, purchases)
        assert abs(r["revenue"] - revenue) < 1e-6
        assert r["conversion_rate"] == (purchases / views if views else None)


def test_real_sample_report(demo_warehouse: Pipeline) -> None:
    report = demo_warehouse.report()
    silver = demo_warehouse.table(tables.SILVER).to_pylist()
    views = sum(r["event_type"] == "view" for r in silver)
    purchases = sum(r["event_type"] == "purchase" for r in silver)
    assert report["funnel"]["views"] == views
    assert report["funnel"]["purchases"] == purchases
    assert report["date_range"] == {"start": "2019-10-01", "end": "2019-12-31"}
    # the sample's best-selling named brand, and NULL brand kept as its own group
    brands = [b["brand"] for b in report["top_brands"]]
    assert brands[:2] == ["(unknown)", "runail"]
    assert [b["price_band"] for b in report["price_bands"]] == ["<10", "10-30", "30-60", "60_plus"]
