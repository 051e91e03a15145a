"""`report --since/--until` gives the dashboard's numbers for the same UTC date range."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from funnelpulse import Pipeline
from funnelpulse.dashboard.data import DashboardData, Filter
from funnelpulse.errors import ConfigError

SEGMENTS = [("top_brands", "brand"), ("categories", "category_root"), ("price_bands", "price_band")]


def counts(rows: list[dict[str, Any]], label: str) -> dict[str, tuple[int, int, int, float]]:
    return {
        r[label]: (r["views"], r["carts"], r["purchases"], round(r["revenue"], 2)) for r in rows
    }


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (date(2019, 10, 1), date(2019, 10, 31)),  # two of the sample's four dates
        (date(2019, 12, 1), date(2019, 12, 1)),  # one day
        (date(2019, 9, 1), date(2020, 1, 31)),  # wider than the data
    ],
)
def test_report_range_equals_dashboard(demo_warehouse: Pipeline, since: date, until: date) -> None:
    report = demo_warehouse.report(10_000, since, until)
    dash = DashboardData(demo_warehouse.warehouse)
    f = Filter(since, until)
    funnel = dash.funnel(f)
    for key in ("views", "carts", "purchases"):
        assert report["funnel"][key] == funnel[key]
    assert report["funnel"]["revenue"] == round(funnel["revenue"], 2)
    for key in ("view_to_cart_rate", "cart_to_purchase_rate", "conversion_rate"):
        assert report["funnel"][key] == pytest.approx(funnel[key], rel=1e-12)
    for key, column in SEGMENTS:
        label = "brand" if column == "brand" else column
        shown = dash.segments(f, column).to_pylist()
        assert counts(report[key], label) == counts(shown, "segment")
    days = [d["date"] for d in dash.daily(f).to_pylist()]
    assert report["date_range"] == {"start": min(days).isoformat(), "end": max(days).isoformat()}
    assert report["range"] == {"since": since.isoformat(), "until": until.isoformat()}


def test_range_really_narrows_and_an_empty_range_is_zero(demo_warehouse: Pipeline) -> None:
    whole = demo_warehouse.report()
    october = demo_warehouse.report(5, date(2019, 10, 1), date(2019, 10, 31))
    december = demo_warehouse.report(5, date(2019, 12, 1), None)
    assert 0 < october["funnel"]["views"] < whole["funnel"]["views"]
    assert october["funnel"]["views"] + december["funnel"]["views"] == whole["funnel"]["views"]
    assert "range" not in whole
    gap = demo_warehouse.report(5, date(2019, 10, 10), date(2019, 10, 20))  # no events there
    assert gap["funnel"]["views"] == 0 and gap["funnel"]["revenue"] == 0
    assert gap["funnel"]["conversion_rate"] is None
    assert gap["top_brands"] == [] and gap["date_range"] == {"start": None, "end": None}
    from funnelpulse.report import format_text

    assert "views 0 -> carts 0 -> purchases 0" in format_text(gap)


def test_report_refuses_bad_arguments(demo_warehouse: Pipeline) -> None:
    with pytest.raises(ConfigError, match="top"):
        demo_warehouse.report(0)
    with pytest.raises(ConfigError, match="after until"):
        demo_warehouse.report(5, date(2019, 12, 31), date(2019, 10, 1))


def test_json_keys_are_the_documented_ones(demo_warehouse: Pipeline) -> None:
    """README lists every key of `report --format json`; this keeps the list true."""
    from pathlib import Path

    data = json.loads(json.dumps(demo_warehouse.report(3, date(2019, 10, 1)), default=str))
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("| `funnelpulse report"))
    for key in data:
        assert f"`{key}`" in line, key
    for key in data["funnel"]:
        assert f"`{key}`" in readme, key
