"""One real event, one incident, one notification: grouping across segments, extents from the
hours whose own evidence moved, ids that never change, coverage gaps and annotations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from funnelpulse import load_settings, tables
from funnelpulse.anomaly import incident_store
from funnelpulse.anomaly.alerts import send_alerts
from funnelpulse.anomaly.coverage import Blank, blank, gap_mask, gap_spans
from funnelpulse.anomaly.incidents import evidence_span, group_incidents, notified
from funnelpulse.anomaly.scoring import rate_baseline
from funnelpulse.anomaly.series import Series

DAY = datetime(2019, 10, 10, tzinfo=UTC)


def firing(
    dimension: str,
    segment: str,
    hour: int,
    hours: int = 1,
    step: str = "traffic",
    z: float = -8.0,
    cause: dict[str, Any] | None = None,
    evidence: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """An anomaly row as `detect` writes it (window of `hours` ending at hour + hours)."""
    start = DAY + timedelta(hours=hour)
    kind = "drop" if z < 0 else "spike"
    row = {
        "anomaly_id": f"{dimension}-{segment}-{step}-{hour}-{hours}",
        "window_start": start,
        "window_end": start + timedelta(hours=hours),
        "window_hours": hours,
        "dimension": dimension,
        "segment": segment,
        "step": step,
        "type": f"traffic_{kind}" if step == "traffic" else kind,
        "observed_rate": 10.0,
        "expected_rate": 100.0,
        "numerator": 10,
        "denominator": None,
        "z": z,
        "severity": "critical" if abs(z) >= 10 else "high",
        "lost_purchases": 3.0,
        "lost_revenue": 30.0,
        "root_cause": json.dumps(cause) if cause else None,
    }
    if evidence:
        row["evidence_start"] = DAY + timedelta(hours=evidence[0])
        row["evidence_end"] = DAY + timedelta(hours=evidence[1])
    return row


def outage(until_hour: int = 12, brands: int = 23) -> list[dict[str, Any]]:
    """A tracking outage 08:00-until_hour: the shop, `brands` brands and three price bands drop."""
    hours = until_hour - 8
    rows = [firing("shop", "all", 8, hours, z=-30.0, evidence=(8, until_hour))]
    for b in range(brands):
        rows.append(firing("brand", f"b{b:02d}", 8 + b % hours, 1, z=-6.0 - b % 5))
    for band in ("<10", "10-30", "30-60"):
        rows.append(firing("price_band", band, 8, hours, z=-12.0, evidence=(8, until_hour)))
    # small brands whose traffic did not fire: views vanished, so their view rates jump
    rows.append(firing("brand", "tiny", 9, 2, step="view_to_cart", z=7.0))
    return rows


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_an_outage_over_23_brands_is_one_incident_and_one_notification(tmp_path: Path) -> None:
    unrelated = firing("brand", "other", 9, 1, step="cart_to_purchase", z=9.0)  # a campaign
    found = group_incidents([*outage(), unrelated])
    assert len(found) == 2
    shop = next(i for i in found if i.root == "shop:all")
    assert shop.incident_id == "shop:all/traffic-drop/20191010T08"
    assert (shop.start, shop.end) == (DAY + timedelta(hours=8), DAY + timedelta(hours=12))
    assert len(shop.segments) == 1 + 23 + 3 + 1 and shop.segments[0] == "shop:all"
    assert "brand:tiny" in shop.segments and "brand:other" not in shop.segments
    assert shop.lost_purchases == 3.0  # the shop's own loss: its brands are inside it

    alert_file = tmp_path / "alerts.jsonl"
    settings = load_settings(
        warehouse=str(tmp_path / "wh"), alert_file=str(alert_file), min_severity="low"
    )
    result = send_alerts(settings.warehouse, settings, [*outage(), unrelated], sinks=["file"])
    sent = lines(alert_file)
    assert result.sent == 2 and len(sent) == 2
    record = next(x for x in sent if x["root"] == "shop:all")
    assert record["incident_id"] == shop.incident_id and len(record["segments"]) == 28
    assert "Also moved (27 segments): brand:b00" in record["message"]
    stored = incident_store.read(settings.warehouse)
    assert sorted(r["root"] for r in stored) == ["brand:other", "shop:all"]


def test_a_checkout_break_is_one_incident_driven_by_its_brand() -> None:
    cause = {
        "brand": [{"segment": "acme", "share": 0.82}, {"segment": "zeta", "share": 0.05}],
        "price_band": [{"segment": "<10", "share": 0.9}],
        "summary": "cart_to_purchase: brand acme explains 82% (rate)",
    }
    band_cause = {"brand": [{"segment": "acme", "share": 0.9}], "summary": "x"}
    rows = [
        firing("shop", "all", 14, 2, step="cart_to_purchase", z=-9.0, cause=cause),
        firing("price_band", "<10", 14, 1, step="cart_to_purchase", z=-8.0, cause=band_cause),
        firing("brand", "acme", 14, 2, step="conversion", z=-11.0),
    ]
    (incident,) = group_incidents(rows)
    assert incident.root == "shop:all" and incident.step == "cart_to_purchase"
    assert incident.kind == "drop"
    assert incident.segments == ["shop:all", "brand:acme", "price_band:<10"]
    assert {"segment": "brand:acme", "share": 0.82} in incident.drivers
    assert all(d["share"] >= 0.1 for d in incident.drivers)  # zeta (5%) is no driver


def test_a_brand_and_its_band_without_the_shop() -> None:
    names_acme = {"brand": [{"segment": "acme", "share": 0.7}], "summary": "x"}
    names_zeta = {"brand": [{"segment": "zeta", "share": 0.7}], "summary": "x"}
    together = [
        firing("brand", "acme", 3, 1, step="conversion", z=-7.0),
        firing("price_band", "<10", 3, 1, step="conversion", z=-6.0, cause=names_acme),
    ]
    (one,) = group_incidents(together)
    assert one.root == "brand:acme" and one.segments == ["brand:acme", "price_band:<10"]
    apart = [
        firing("brand", "acme", 3, 1, step="conversion", z=-7.0),
        firing("price_band", "<10", 3, 1, step="conversion", z=-6.0, cause=names_zeta),
    ]
    assert len(group_incidents(apart)) == 2  # the band's own cause is another brand
    # two brands at the same hour are two incidents unless something ties them
    two = [firing("brand", "a", 3, step="conversion"), firing("brand", "b", 3, step="conversion")]
    assert len(group_incidents(two)) == 2


def test_the_evidence_span_is_where_the_hours_moved_not_the_window() -> None:
    expected = np.full(24, 100.0)
    observed = expected + np.array([3, -4, 2] + [-2] * 0 + [0] * 21, dtype=float)
    observed[5:13] = 5.0  # eight hours broken inside a 24-hour window
    observed[20] = 88.0  # a noisy hour later on
    assert evidence_span(observed, expected, -1.0, 0.25) == (5, 12)
    # a spike: the hours that rose
    spiked = expected.copy()
    spiked[22:] = 190.0
    assert evidence_span(spiked, expected, 1.0, 0.25) == (22, 23)


def test_ids_stay_fixed_when_later_data_extends_an_incident(tmp_path: Path) -> None:
    alert_file = tmp_path / "alerts.jsonl"
    settings = load_settings(
        warehouse=str(tmp_path / "wh"), alert_file=str(alert_file), min_severity="low"
    )
    # 09:00: only a brand had fired so far (its own firing names the incident)
    early = [firing("brand", "b00", 8, 1, z=-7.0)]
    send_alerts(settings.warehouse, settings, early, sinks=["file"])
    (first,) = incident_store.read(settings.warehouse)
    assert first["incident_id"] == "brand:b00/traffic-drop/20191010T08"
    # 14:00: the shop, 23 brands and three bands fired: the same event, grown
    result = send_alerts(settings.warehouse, settings, outage(14), sinks=["file"])
    assert result.sent == 0 and result.skipped == 1
    (grown,) = incident_store.read(settings.warehouse)
    assert grown["incident_id"] == first["incident_id"]
    assert grown["root"] == "shop:all" and grown["ended_at"] == DAY + timedelta(hours=14)
    assert len(json.loads(grown["segments"])) == 28
    assert grown["first_recorded_at"] == first["first_recorded_at"]
    assert [x["incident_id"] for x in lines(alert_file)] == [first["incident_id"]]
    # a second, later event of the same shop is a new incident with its own id
    later = [firing("shop", "all", 20, 2, z=-9.0, evidence=(20, 22))]
    send_alerts(settings.warehouse, settings, later, sinks=["file"])
    ids = sorted(r["incident_id"] for r in incident_store.read(settings.warehouse))
    assert ids == [first["incident_id"], "shop:all/traffic-drop/20191010T20"]


def test_notified_counts_what_alerting_would_open() -> None:
    found = group_incidents([*outage(), firing("brand", "x", 20, step="conversion", z=-4.2)])
    assert len(notified(found, "low")) == 2
    low = found[0].__class__(**{**found[0].__dict__, "severity": "low"})
    assert notified([low], "medium") == []


def series(views: np.ndarray) -> Series:
    """Two segments (shop and one brand) over len(views) hours; carts and purchases in step."""
    hours = np.datetime64("2019-10-01T00", "us") + np.arange(len(views)) * np.timedelta64(1, "h")
    v = np.vstack([views, views / 2]).astype(float)
    return Series(
        hours,
        ["shop", "brand"],
        ["all", "acme"],
        {"views": v, "carts": v / 5, "purchases": v / 20, "revenue": v},
    )


def test_hours_with_no_event_are_a_gap_and_annotated_hours_leave_the_baselines() -> None:
    views = np.full(24 * 6, 100.0)
    views[30:34] = 0.0  # nothing at all arrived 06:00-10:00 on day 2
    s = series(views)
    assert gap_spans(s.hours, gap_mask(s)) == [
        (datetime(2019, 10, 2, 6, tzinfo=UTC), datetime(2019, 10, 2, 10, tzinfo=UTC))
    ]
    blanked = blank(s)
    assert np.isnan(blanked.values["views"][:, 30:34]).all()
    assert not np.isnan(blanked.values["views"][:, :30]).any()
    # an annotation of the brand on day 3, 12:00-14:00, blanks only that brand's hours
    note = Blank(
        datetime(2019, 10, 3, 12, tzinfo=UTC), datetime(2019, 10, 3, 14, tzinfo=UTC), "brand:acme"
    )
    both = blank(s, [note])
    assert np.isnan(both.values["carts"][1, 60:62]).all()
    assert not np.isnan(both.values["carts"][0, 60:62]).any()
    # later baselines leave the blanked hours out: one past day fewer at those hours of day, and
    # the expected rate is still finite (no NaN leaks into later hours)
    plain = rate_baseline(s.values["carts"], s.values["views"], history_days=4)
    gapped = rate_baseline(both.values["carts"], both.values["views"], history_days=4)
    assert plain.days[1, 24 * 4 + 12] - gapped.days[1, 24 * 4 + 12] == 1
    assert np.isfinite(gapped.expected[:, 24 * 5 :]).all()


@pytest.mark.parametrize("bad", ["acme", "colour:red", "brand:"])
def test_an_annotation_segment_must_be_dimension_value(tmp_path: Path, bad: str) -> None:
    from funnelpulse.cli import run

    code = run(
        [
            "--warehouse",
            str(tmp_path / "wh"),
            "annotate",
            "--start",
            "2019-10-10",
            "--end",
            "2019-10-11",
            "--segment",
            bad,
            "promo",
        ]
    )
    assert code == 2  # a flag error (see `annotate --help`), before anything is written
    assert not tables.exists(tables.table_path(str(tmp_path / "wh"), tables.ANNOTATIONS))
