"""The dashboard: every page with Streamlit's AppTest, then for real in Debian chromium."""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from browser_tools import PAGES, browser, open_page, running_dashboard

from funnelpulse import Pipeline
from funnelpulse.dashboard.formats import band_label

APP = Path(__file__).parents[1] / "src" / "funnelpulse" / "dashboard"
PAGE_FILES = [
    "Overview.py",
    "pages/1_Brands.py",
    "pages/2_Categories.py",
    "pages/3_Price_bands.py",
    "pages/4_Anomalies.py",
    "pages/5_Live.py",
]


def app(warehouse: str, page: str):  # type: ignore[no-untyped-def]
    from streamlit.testing.v1 import AppTest

    os.environ["FUNNELPULSE_WAREHOUSE"] = warehouse
    return AppTest.from_file(str(APP / page), default_timeout=60)


@pytest.fixture(autouse=True)
def _restore_env():  # type: ignore[no-untyped-def]
    old = os.environ.get("FUNNELPULSE_WAREHOUSE")
    yield
    if old is None:
        os.environ.pop("FUNNELPULSE_WAREHOUSE", None)
    else:
        os.environ["FUNNELPULSE_WAREHOUSE"] = old


def test_overview_numbers_match_the_report(demo_warehouse: Pipeline) -> None:
    at = app(demo_warehouse.warehouse, "Overview.py").run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    funnel = demo_warehouse.report()["funnel"]
    assert shown["Views"] == f"{funnel['views']:,}"
    assert shown["Carts"] == f"{funnel['carts']:,}"
    assert shown["Purchases"] == f"{funnel['purchases']:,}"
    assert shown["Revenue"] == f"{funnel['revenue']:,.2f}"
    assert shown["View → purchase"] == f"{funnel['conversion_rate'] * 100:.1f}%"


def test_brand_filter_and_empty_selection(demo_warehouse: Pipeline) -> None:
    at = app(demo_warehouse.warehouse, "Overview.py").run()
    at.sidebar.multiselect(key="filter_brand").set_value(["runail"]).run()
    runail = next(b for b in demo_warehouse.report(top=50)["top_brands"] if b["brand"] == "runail")
    assert {m.label: m.value for m in at.metric}["Purchases"] == f"{runail['purchases']:,}"
    # mid-October has no events in the sample: a friendly message, not an error
    at.sidebar.date_input(key="dates").set_value((date(2019, 10, 10), date(2019, 10, 20))).run()
    assert not at.exception
    assert "No events match these filters" in at.warning[0].value


def test_brand_leaderboard_matches_report(demo_warehouse: Pipeline) -> None:
    at = app(demo_warehouse.warehouse, "pages/1_Brands.py").run()
    assert not at.exception
    board = at.dataframe[0].value
    top = demo_warehouse.report(top=3)["top_brands"]
    assert list(board["brand"][:3]) == [b["brand"] for b in top]
    assert list(board["purchases"][:3]) == [b["purchases"] for b in top]
    assert "(unknown)" in list(board["brand"])


@pytest.mark.parametrize(
    ("page", "column", "key"),
    [
        ("pages/2_Categories.py", "category_root", "categories"),
        ("pages/3_Price_bands.py", "price_band", "price_bands"),
    ],
)
def test_segment_pages_match_report(
    demo_warehouse: Pipeline, page: str, column: str, key: str
) -> None:
    at = app(demo_warehouse.warehouse, page).run()
    assert not at.exception
    table = at.dataframe[0].value
    expected = demo_warehouse.report(top=50)[key]
    # the table keeps its data under the column names; people see the labels and `60+`
    assert dict(zip(table[column], table["views"], strict=True)) == {
        band_label(r[column]): r["views"] for r in expected
    }


@pytest.mark.slow
def test_anomaly_page(tmp_path: Path) -> None:
    from funnelpulse import generate_events, write_events

    p = Pipeline(warehouse=str(tmp_path / "wh"))
    at = app(p.warehouse, "pages/4_Anomalies.py").run()
    assert "No gold tables" in at.info[0].value
    p.ingest([write_events(generate_events(400_000, seed=2, days=10), tmp_path / "e.csv")])
    p.build()
    at = app(p.warehouse, "pages/4_Anomalies.py").run()
    assert "funnelpulse detect" in at.info[0].value
    # make a real anomaly: rebuild one day's purchases away for one hour is hard on raw files, so
    # detect with a loose threshold instead, which flags ordinary noise as anomalies
    from funnelpulse.config import RULES

    knob = {"false_alarms_per_week": 1000} if "false_alarms_per_week" in RULES else {"alpha": 0.05}
    loose = Pipeline(warehouse=p.warehouse, **knob)
    result = loose.detect()
    found = result.anomalies.to_pylist()
    assert found
    at = app(p.warehouse, "pages/4_Anomalies.py").run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    # one per real event, as detect recorded them in the lasting incidents table
    assert shown["Incidents"] == f"{len(result.incidents):,}"
    assert shown["Anomalous segment-hours"] == f"{len(found):,}"
    assert any("Root cause" in m.value for m in at.markdown)
    # muting from the page is the CLI's action: the workflow records it, by the dashboard
    from datetime import UTC, datetime

    from funnelpulse.anomaly.workflow import active_mutes, read_actions

    assert active_mutes(read_actions(p.warehouse), datetime.now(UTC)) == []
    next(b for b in at.button if b.label.startswith("Mute ")).click().run()
    assert not at.exception
    mutes = active_mutes(read_actions(p.warehouse), datetime.now(UTC))
    assert len(mutes) == 1 and mutes[0].by == "dashboard"
    assert any("Muted for 4 hours" in m.value for m in at.success)


def test_live_page_empty_states(demo_warehouse: Pipeline) -> None:
    at = app(demo_warehouse.warehouse, "pages/5_Live.py").run()
    assert not at.exception
    assert "No live table" in at.info[0].value


@pytest.mark.parametrize("page", PAGE_FILES)
def test_missing_warehouse_never_crashes(tmp_path: Path, page: str) -> None:
    at = app(str(tmp_path / "nothing-here"), page).run()
    assert not at.exception
    assert at.info and ("funnelpulse" in at.info[0].value or "live table" in at.info[0].value)


@pytest.mark.browser
def test_every_page_in_a_real_browser(demo_warehouse: Pipeline, tmp_path: Path) -> None:
    funnel = demo_warehouse.report()["funnel"]
    with running_dashboard(demo_warehouse.warehouse) as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        for name, (path, heading, selectors) in PAGES.items():
            open_page(page, f"{url}/{path}", heading, selectors)
            text = page.inner_text("body")
            cells = page.locator(
                '[data-testid="stDataFrame"] [role="gridcell"]'
            ).all_text_contents()
            page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)  # for a failure
            # what Streamlit shows for an exception in a page, with or without its details
            failed = page.locator(
                '[data-testid="stException"], [data-testid="stAlertContentError"]'
            )
            assert failed.count() == 0, (name, failed.all_text_contents())
            assert "Traceback" not in text
            if name == "Overview":
                assert f"{funnel['views']:,}" in text and f"{funnel['revenue']:,.2f}" in text
            if name == "Brands":
                assert "runail" in cells and "(unknown)" in cells
            if name == "Price bands":
                assert [c for c in cells if c in ("<10", "10-30", "30-60", "60+")] == [
                    "<10",
                    "10-30",
                    "30-60",
                    "60+",
                ]
            if name == "Live":
                assert "No live table" in text


# ---- data values are never markup, errors never show server paths ----------------------------


def _hostile_names(host: str) -> tuple[str, str]:
    """A brand and a category that would fetch or link `host` if any page treated them as markup."""
    brand = (
        f"![x](http://{host}/md.png) <a href=http://{host}/a>click</a> "
        f"<img src=http://{host}/img> :red[boom] $x$ http://{host}/bare"
    )
    return brand, f"<a href=http://{host}/cat>cat</a>"


def _pixel_server() -> tuple[Any, list[str]]:
    """A local HTTP server that records every path fetched from it (an attacker's host), started."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    fetched: list[str] = []

    class Pixel(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            fetched.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pixel)
    Thread(target=server.serve_forever, daemon=True).start()
    return server, fetched


def _hostile_warehouse(root: Path, host: str) -> tuple[Pipeline, str]:
    """Two days of events whose top brand and a category are hostile, and one anomaly on it."""
    import json
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa
    from conftest import row, write_csv

    from funnelpulse import tables
    from funnelpulse.anomaly.detect import ANOMALY_SCHEMA

    brand, category = _hostile_names(host)
    lines = []
    for day in (1, 2):
        for hour in range(24):
            ts = f"2019-10-0{day} {hour:02d}:00:00"
            for _ in range(6):
                lines.append(row(ts, "view", brand=brand, category_code=category, price="50.00"))
            lines.append(row(ts, "cart", brand=brand, category_code=category, price="50.00"))
            lines.append(row(ts, "purchase", brand=brand, category_code=category, price="50.00"))
            lines.append(row(ts, "view", brand="plain", price="5.00"))
    p = Pipeline(warehouse=str(root / "wh"))
    p.ingest([write_csv(root / "hostile.csv", lines)])
    p.build()
    stored = brand.lower()  # silver normalises brands to lower case
    start = datetime(2019, 10, 2, 10, tzinfo=UTC)
    values = {
        "anomaly_id": "hostile1",
        "method": "seasonal",
        "window_start": start,
        "window_end": start + timedelta(hours=1),
        "window_hours": 1,
        "dimension": "brand",
        "segment": stored,
        "step": "conversion",
        "type": "drop",
        "observed_rate": 0.01,
        "expected_rate": 0.2,
        "numerator": 1,
        "denominator": 100,
        "z": -7.0,
        "p_value": 1e-9,
        "severity": "high",
        "lost_purchases": 5.0,
        "lost_revenue": 250.0,
        "root_cause": json.dumps({"summary": f"conversion: brand {stored} explains 90% (rate)"}),
        "detected_at": datetime.now(UTC),
        "window_date": start.date(),
    }
    anomaly = {f.name: values.get(f.name) for f in ANOMALY_SCHEMA}
    tables.write(
        tables.table_path(p.warehouse, tables.ANOMALIES),
        pa.Table.from_pylist([anomaly], schema=ANOMALY_SCHEMA),
        partition_by=["window_date"],
    )
    return p, stored


def test_hostile_names_are_escaped_for_markdown(tmp_path: Path) -> None:
    p, brand = _hostile_warehouse(tmp_path, "localhost:9")
    at = app(p.warehouse, "Overview.py").run()
    at.sidebar.multiselect(key="filter_brand").set_value([brand]).run()
    assert not at.exception
    caption = next(c.value for c in at.caption if "brands:" in c.value)
    shown = caption.split("brands: ", 1)[1]
    # every Markdown character of the name is backslash-escaped, so it renders as plain text
    assert re.search(r"(?<!\\)[!<>\[\]():$]", shown) is None, shown
    assert shown.replace("\\", "") == brand
    at = app(p.warehouse, "pages/4_Anomalies.py").run()
    assert not at.exception
    cause = next(m.value for m in at.markdown if "Root cause" in m.value)
    summary = cause.removeprefix("**Root cause:** ")
    assert re.search(r"(?<!\\)[!<>\[\]():$]", summary) is None, summary
    assert summary.replace("\\", "") == f"conversion: brand {brand} explains 90% (rate)"


def test_an_unreadable_warehouse_gets_a_friendly_box_without_paths(tmp_path: Path) -> None:
    p, _ = _hostile_warehouse(tmp_path, "localhost:9")
    gold = Path(p.warehouse, "gold_funnel_daily_brand")
    for part in gold.rglob("*.parquet"):
        part.unlink()  # the log names files that are gone
    at = app(p.warehouse, "Overview.py").run()
    assert not at.exception
    assert "could not be read" in at.error[0].value
    assert str(tmp_path) not in at.error[0].value and ".parquet" not in at.error[0].value


@pytest.mark.browser
def test_hostile_names_create_no_links_or_images_in_a_real_browser(tmp_path: Path) -> None:
    server, fetched = _pixel_server()
    host = f"localhost:{server.server_address[1]}"
    p, brand = _hostile_warehouse(tmp_path, host)
    pages = {
        "Brands": ("Leaderboard", ['[data-testid="stDataFrame"]', ".js-plotly-plot"]),
        "Categories": ("Detail", [".js-plotly-plot"]),
        "Anomalies": ("Incident", ['[data-testid="stMarkdown"]', ".js-plotly-plot"]),
    }
    try:
        with running_dashboard(p.warehouse) as url, browser() as b:
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            for path, (heading, selectors) in pages.items():
                open_page(page, f"{url}/{path}", heading, selectors)
                page.wait_for_timeout(500)  # let images, if any, start loading
                # any element that could fetch or link the host: <img src>, <a href>, SVG
                # <a xlink:href> (Plotly), srcset, style url(...); a text input's value is fine
                pointing = page.evaluate(
                    """(host) => [...document.querySelectorAll('*')].flatMap(e =>
                        [...e.attributes]
                          .filter(a => /^(src|href|srcset|xlink:href|data|poster|action|formaction|background|style)$/.test(a.name)
                                       && a.value.includes(host))
                          .map(a => e.tagName + ' ' + a.name))""",
                    host,
                )
                assert pointing == [], (path, pointing)
                links = page.locator(f'a[href*="{host}"], img[src*="{host}"]').count()
                assert links == 0
                text = page.inner_text("body")
                assert "Deploy" not in text
                assert page.locator('[data-testid="stAppDeployButton"]').count() == 0
                if path == "Anomalies":
                    assert f"![x](http://{host}/md.png)" in text  # shown as text, not obeyed
                if path == "Brands":
                    # the drill-in select box shows the name as its plain text value
                    shown = page.evaluate(
                        "() => [...document.querySelectorAll('input')].map(i => i.value)"
                    )
                    assert brand in shown, shown
            page.screenshot(path=str(tmp_path / "hostile.png"), full_page=True)
    finally:
        server.shutdown()
    assert fetched == []


def _hostile_live_incident(p: Pipeline, brand: str) -> str:
    """The hostile brand's live buckets (its silver events, merged as the stream merges them) and
    one open live incident on it, recorded as the stream's check records one; returns its id."""
    from datetime import UTC, datetime

    from funnelpulse import tables
    from funnelpulse.anomaly.live_incidents import LiveIncident, group_live, write_incidents
    from funnelpulse.streaming.buckets import update_buckets

    silver = tables.read(tables.table_path(p.warehouse, tables.SILVER))
    update_buckets(p.warehouse, silver, batch_id=1)
    start = datetime(2019, 10, 2, 10, tzinfo=UTC)
    live = LiveIncident(
        incident_id=f"brand:{brand}:20191002T10",
        dimension="brand",
        segment=brand,
        status="open",
        step="cart_to_purchase",
        type="drop",
        severity="high",
        started_at=start,
        detected_at=datetime.now(UTC),
        last_firing_at=start,
        resolved_at=None,
        as_of=start,
        minutes=30.0,
        window_minutes=30,
        observed=0.0,
        expected=3.0,
        trials=6.0,
        z=-6.0,
        p=1e-9,
        lost_purchases=3.0,
        lost_revenue=150.0,
    )
    groups = group_live(p.warehouse, [live], start)
    write_incidents(p.warehouse, [live])
    return groups[0].incident.incident_id


@pytest.mark.browser
def test_live_page_act_buttons_show_a_hostile_brand_as_text_and_mute_it(tmp_path: Path) -> None:
    """The Live page's Mute button names the incident's segment: a brand full of Markdown and
    HTML is shown as text (no link, image or fetch), and clicking it mutes that brand."""
    from datetime import UTC, datetime

    from funnelpulse.anomaly.workflow import active_mutes, read_actions

    server, fetched = _pixel_server()
    host = f"localhost:{server.server_address[1]}"
    p, brand = _hostile_warehouse(tmp_path, host)
    iid = _hostile_live_incident(p, brand)
    try:
        with running_dashboard(p.warehouse) as url, browser() as b:
            page = b.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(f"{url}/Live", wait_until="domcontentloaded")
            mute = page.get_by_role("button", name="Mute Brand")
            mute.first.wait_for(timeout=90_000)
            label = mute.first.inner_text()
            # the whole name, character for character, as the button's text
            assert label == f"Mute Brand {brand} for 4 hours", label
            page.wait_for_timeout(500)  # let images, if any, start loading
            pointing = page.evaluate(
                """(host) => [...document.querySelectorAll('*')].flatMap(e =>
                    [...e.attributes]
                      .filter(a => /^(src|href|srcset|xlink:href|data|poster|action|formaction|background|style)$/.test(a.name)
                                   && a.value.includes(host))
                      .map(a => e.tagName + ' ' + a.name))""",
                host,
            )
            assert pointing == []
            mute.first.click()
            page.get_by_text("Muted for 4 hours").first.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "live_hostile.png"), full_page=True)
    finally:
        server.shutdown()
    assert fetched == []
    mutes = active_mutes(read_actions(p.warehouse), datetime.now(UTC))
    assert [(m.segment, m.step, m.by) for m in mutes] == [
        (f"brand:{brand}", "cart_to_purchase", "dashboard")
    ]
    assert iid.startswith(f"brand:{brand}/cart_to_purchase-drop/")
