"""The dashboard's pure formatting pieces (no Streamlit, no browser): labels, numbers, axes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from funnelpulse.contract import BAND_LABELS
from funnelpulse.dashboard import formats


def test_every_column_a_page_shows_has_a_human_label() -> None:
    for raw in ("conversion_rate", "median_seconds_to_cart", "view_to_cart_rate",
                "cart_abandonment_rate", "avg_order_value", "category_root", "lost_revenue"):  # fmt: skip
        shown = formats.label(raw)
        assert "_" not in shown and shown != raw, (raw, shown)
    assert formats.label("conversion_rate") == "View → purchase"
    assert formats.label("some_new_column") == "Some new column"


def test_price_bands_read_as_people_write_them_cheapest_first() -> None:
    assert formats.band_order() == ["<10", "10-30", "30-60", "60+"]
    assert [formats.band_label(b) for b in BAND_LABELS] == formats.band_order()
    colours = formats.ordered_colours(formats.band_order())
    assert len(set(colours.values())) == 4  # four distinct colours, not two blues and two reds


def test_numbers_have_thousands_separators_and_kpis_stay_short() -> None:
    assert formats.count(1_408_193) == "1,408,193"
    assert formats.money(573462.634) == "573,462.63"
    assert formats.pct(0.1873) == "18.7%"
    assert formats.short(948_210) == "948,210"
    assert formats.short(1_408_193) == "1.41M"
    assert formats.short(2_500_000_000.0, money_digits=True) == "2.50B"
    assert formats.short(12_345.678, money_digits=True) == "12,345.68"
    assert formats.count(None) == formats.short(float("nan")) == "n/a"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(14, "14 s"), (90, "2 min"), (4_500, "1 h 15 min"), (7_200, "2 h"), (3 * 86_400, "3 d")],
)
def test_durations(seconds: float, text: str) -> None:
    assert formats.duration(seconds) == text


def test_a_one_day_range_is_drawn_per_hour_with_each_tick_on_its_own_date() -> None:
    day = date(2019, 10, 28)
    assert formats.grain(day, day) == "hour"
    axis = formats.time_axis(day, day)
    assert axis["range"] == [datetime(2019, 10, 28, tzinfo=UTC), datetime(2019, 10, 29, tzinfo=UTC)]
    assert axis["dtick"] % 3_600_000 == 0 and 24 * 3_600_000 / axis["dtick"] <= 12
    assert axis["tickformat"].startswith("%H:%M")
    # a month is drawn per day, ticks labelled with the day (Oct 31 is not "Nov 2019")
    month = formats.time_axis(date(2019, 10, 1), date(2019, 10, 31))
    assert formats.grain(date(2019, 10, 1), date(2019, 10, 31)) == "day"
    assert month["tickformat"] == "%b %d" and month["dtick"] % 86_400_000 == 0
    assert month["range"][1] - month["range"][0] == timedelta(days=31)


def test_value_axes_start_at_zero_and_rates_stop_at_100_percent() -> None:
    rate = formats.value_axis([0.18, 0.2, None, float("nan")], rate=True)
    assert rate["range"][0] == 0 and 0.2 < rate["range"][1] <= 1.0
    assert formats.value_axis([0.95], rate=True)["range"] == [0, 1.0]
    assert formats.value_axis([], rate=True)["range"] == [0, 1.0]  # one empty day: no −50%
    assert formats.value_axis([250_000.0])["tickformat"] == "~s"
    log = formats.log_axis("Views")
    assert log["dtick"] == 1 and log["tickformat"] == "~s"  # 10, 100, 1k: no "2 5" between


def test_words_for_segments_steps_and_detector_text() -> None:
    assert formats.segment_text("shop:all") == "Whole shop"
    assert formats.segment_text("price_band:60_plus") == "Price band 60+"
    assert formats.what_text("purchase", "drop") == "purchases drop"
    assert formats.what_text("traffic", "traffic_spike") == "traffic spike"
    assert (
        formats.humanise("traffic: price_band 60_plus explains 77%; category_root (unknown)")
        == "traffic: price band 60+ explains 77%; category (unknown)"
    )
    assert formats.humanise("session_view_to_cart drop") == "sessions view → cart drop"


def test_why_an_incident_fired_in_plain_words() -> None:
    start = datetime(2019, 10, 28, 10, tzinfo=UTC)
    row = {"step": "cart_to_purchase", "window_start": start, "window_hours": 4,
           "numerator": 3, "denominator": 35, "observed_rate": 3 / 35,
           "expected_rate": 16 / 35}  # fmt: skip
    assert formats.why_text(row) == (
        "3 purchases from 35 carts in the 4 hours from Oct 28 10:00 UTC, 16 expected "
        "(8.6% against 45.7%)"
    )
    views = {"step": "traffic", "window_start": start, "window_hours": 1, "numerator": 12,
             "denominator": None, "observed_rate": 12.0, "expected_rate": 1204.4}  # fmt: skip
    assert formats.why_text(views) == "12 views in the hour from Oct 28 10:00 UTC, 1,204 expected"


def test_the_web_says_what_to_type_for_a_bad_window() -> None:
    assert formats.window_problem("24h") is None
    problem = formats.window_problem("90")
    assert problem is not None and "--window" not in problem and "30m" in problem
    assert formats.window_problem("0h") is not None


def test_the_previous_period_says_why_there_is_no_change() -> None:
    start = date(2019, 10, 1)
    assert formats.previous_note(30, start, True) == "Changes are against the previous 30 days"
    note = formats.previous_note(30, start, False)
    assert "no data in the previous 30 days" in note and "2019-09-01 to 2019-09-30" in note


def test_newest_alerts_are_one_line_per_alert_not_per_sink() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {"incident_id": "a", "sink": "file", "status": "sent", "message": "m1", "recorded_at": t},
        {"incident_id": "a", "sink": "slack", "status": "failed", "message": "m1",
         "recorded_at": t + timedelta(seconds=1)},
        {"incident_id": "b", "sink": "file", "status": "sent", "message": "m2",
         "recorded_at": t - timedelta(hours=1)},
    ]  # fmt: skip
    out = formats.newest_alerts(rows)
    assert [(r["incident_id"], r["sent_to"]) for r in out] == [
        ("a", "file, slack (failed)"),
        ("b", "file"),
    ]
