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


# -- what the commands print, rendered from typed results without running a command ------------


def test_ingest_build_vacuum_and_replay_text() -> None:
    from funnelpulse.engines.base import BuildResult
    from funnelpulse.ingest import FileResult, IngestResult
    from funnelpulse.report import format_build, format_ingest, format_replay, format_vacuum
    from funnelpulse.streaming.replay import ReplayResult

    one = FileResult("a.csv", 1_200, 3, {"unknown event_type": 2, "bad price": 1})
    assert format_ingest(IngestResult([one])) == (
        "a.csv: 1,200 rows to bronze_events, 3 to quarantine_events "
        "(unknown event_type 2, bad price 1)"
    )
    both = format_ingest(IngestResult([one, FileResult("b.csv", 5)])).splitlines()
    assert both[1:] == [
        "b.csv: 5 rows to bronze_events, 0 to quarantine_events",
        "Total: 1,205 to bronze_events, 3 quarantined",
    ]
    assert format_ingest(IngestResult()) == ""  # nothing read: nothing printed
    built = BuildResult("duckdb", {"silver_events": 20_986, "gold_funnel_daily_brand": 687})
    assert format_build(built) == "silver_events: 20,986 rows\ngold_funnel_daily_brand: 687 rows"
    assert format_vacuum({"bronze_events": (2, 1_500_000), "anomalies": (0, 0)}, 0, True) == (
        "bronze_events: would delete 2 files (1.5 MB)\n"
        "anomalies: would delete 0 files (0.0 MB)\n"
        "Total: would delete 1.5 MB (kept every version of the last 0 h)"
    )
    assert format_replay(ReplayResult(12_345, 2.0)) == (
        "Published 12,345 events in 2.0 s (6,172/s), all delivered"
    )


def test_evaluate_text_names_what_each_method_missed() -> None:
    from funnelpulse.anomaly.incidents import Score
    from funnelpulse.report import format_evaluate

    missed = {"id": "inc02", "kind": "cart_drop", "segment": "brand:acme", "ideal_z": -6.25}
    score = Score(
        "seasonal", 3, 2, 2, 1, 4, 1, 0.25, 2 / 3, 0.5, 0.333333, 1.5, 4.0, 0.75,
        {"cart_drop": {"labels": 2, "found": 1, "detectable": 2, "found_detectable": 1,
                       "notifications": 2}},
        [{**missed, "detected": False, "detectable": True}],
        2.0,
    )  # fmt: skip
    lines = format_evaluate([score]).splitlines()
    assert lines[0].split() == [
        "method", "labels", "found", "detectable", "of", "which", "found", "incidents", "precision",
        "recall",
        "recall(det)", "F1(det)", "delay", "p50/p90", "false/week", "notices/label",
    ]  # fmt: skip
    assert lines[1].split() == [
        "seasonal", "3", "2", "2", "1", "4", "0.25", "0.67", "0.50", "0.33", "1.5/4.0", "h", "0.75", "2.00",
    ]  # fmt: skip
    assert lines[2:] == [
        "seasonal per kind: cart_drop 1/2 (detectable 1/2, 2 notices)",
        "seasonal missed detectable: inc02 (cart_drop brand:acme, ideal z -6.2)",
    ]


def test_stream_generate_and_broker_text() -> None:
    from pathlib import Path

    from funnelpulse.generate import Generated
    from funnelpulse.report import format_broker, format_generated, format_stream
    from funnelpulse.streaming.windows import StreamResult

    done = StreamResult(batches=3, input_rows=2_000, quarantined=1, windows=833, seconds=9.4)
    assert format_stream(done, "wh", alert=False) == (
        "Stream stopped after 9 s: 3 batches, 2,000 events in, 0 late events dropped by the "
        "watermark, 1 quarantined, 833 windows in wh/gold_stream_funnel_hourly_brand"
    )
    assert format_stream(done, "wh", alert=True).splitlines()[1] == "Alerts: 0 sent, 0 failed"
    out = Path("g.csv")
    assert format_generated(Generated(out, 2_000, 0, None)) == "Wrote 2,000 events to g.csv"
    labelled = Generated(out, 2_000, 3, Path("g.csv.labels.json"))
    assert format_generated(labelled).splitlines()[1] == (
        "Injected 3 incidents; labels in g.csv.labels.json"
    )
    assert format_broker(9092, "t", 2) == (
        "Kafka-protocol broker on 127.0.0.1:9092, topic t (2 partitions). "
        "In-memory: data is gone when it stops. Ctrl-C to stop."
    )
