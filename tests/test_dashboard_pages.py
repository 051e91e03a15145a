"""Every page in Debian's chromium, on a generated month and on the bundled sample: screenshots,
and what an analyst reads — no raw column names, no cut-off KPI, hours on a one-day range, day
ticks on their own dates, axes from zero, the incidents listed and the annotations drawn."""

from __future__ import annotations

import importlib.util
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from browser_tools import browser, running_dashboard

from funnelpulse import Pipeline, tables
from funnelpulse.anomaly import annotations
from funnelpulse.anomaly.incident_book import incident_book
from funnelpulse.config import load_settings
from funnelpulse.dashboard import formats
from funnelpulse.dashboard.formats import LABELS
from funnelpulse.tables import TABLE_SCHEMAS

pytestmark = pytest.mark.browser

_SCRIPT = Path(__file__).parents[1] / "scripts" / "screenshots.py"
_spec = importlib.util.spec_from_file_location("screenshots", _SCRIPT)
assert _spec and _spec.loader
shots: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shots)

# Names only a table or a program uses: every column with an underscore, and the band `60_plus`.
RAW = sorted(
    {n for n in LABELS if "_" in n}
    | {f.name for schema in TABLE_SCHEMAS.values() for f in schema if "_" in f.name}
    | {"60_plus"}
)
_RAW = re.compile(r"(?<![\w`])(" + "|".join(map(re.escape, RAW)) + r")(?![\w`])")


def _read(page: Any) -> dict[str, Any]:
    """What the page shows: its text, every chart's tick and label texts, the table headers,
    and each KPI value with whether it fits its card."""
    return page.evaluate(
        """() => ({
          text: document.body.innerText,
          svg: [...document.querySelectorAll('.main-svg text')].map(t => t.textContent),
          xticks: [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].map(c =>
              [...c.querySelectorAll('.xtick text')].map(t => t.textContent)),
          yticks: [...document.querySelectorAll('.ytick text, .y2tick text')].map(t => t.textContent),
          headers: [...document.querySelectorAll('[data-testid="stDataFrame"] [role="columnheader"]')]
              .map(h => h.textContent),
          cells: [...document.querySelectorAll('[data-testid="stDataFrame"] [role="gridcell"]')]
              .map(h => h.textContent),
          kpis: [...document.querySelectorAll('[data-testid="stMetricValue"]')].map(e => ({
              text: e.innerText,
              fits: [e, ...e.querySelectorAll('*')].every(c => c.scrollWidth <= c.clientWidth + 1),
          })),
        })"""
    )


def _visit(b: Any, url: str, out: Path) -> dict[str, dict[str, Any]]:
    """Every page (and the one-day Overview) with a screenshot each; returns what each shows."""
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    seen = {}
    for name, (path, heading, file) in shots.SHOTS.items():
        page.goto(f"{url}/{path}", wait_until="domcontentloaded")
        shots.settle(page, heading)
        shots.capture(page, out / file)
        failed = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
        assert failed.count() == 0, (name, failed.all_text_contents())
        seen[name] = _read(page)
    page.close()
    return seen


def _check_every_page(seen: dict[str, dict[str, Any]]) -> None:
    for name, shown in seen.items():
        words = "\n".join([shown["text"], *shown["svg"], *shown["headers"]])
        assert "Traceback" not in words, name
        assert _RAW.findall(words) == [], (name, sorted(set(_RAW.findall(words))))
        for kpi in shown["kpis"]:
            assert kpi["fits"] and "…" not in kpi["text"], (name, kpi)
        # axes start where the data does: no negative conversion or revenue
        assert not [t for t in shown["yticks"] if t.startswith(("−", "-"))], (name, shown["yticks"])
        for ticks in shown["xticks"]:
            # Plotly's fallback ticks at the edge of a day; and a month name alone under a day
            assert not [t for t in ticks if re.search(r"\d\d:\d\d:\d\d\.\d", t)], (name, ticks)
            assert not [t for t in ticks if re.fullmatch(r"[A-Z][a-z]{2} \d{4}", t)], (name, ticks)


def _hourly(shown: dict[str, Any]) -> list[str]:
    """The hour ticks (HH:MM) of the page's time charts."""
    return [t for ticks in shown["xticks"] for t in ticks if re.match(r"\d\d:\d\d", t)]


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> str:
    return shots.build_month(tmp_path_factory.mktemp("month"))


def test_every_page_on_a_generated_month(month: str, tmp_path: Path) -> None:
    with running_dashboard(month, timeout_s=90) as url, browser() as b:
        seen = _visit(b, url, tmp_path)
    _check_every_page(seen)
    day = seen["Overview, one day"]
    assert len(set(_hourly(day))) >= 8, day["xticks"]  # hours, every 3 hours or closer
    month_ticks = [t for ticks in seen["Overview"]["xticks"] for t in ticks]
    assert "Oct 01" in month_ticks and not _hourly(seen["Overview"]), month_ticks
    assert "Autumn promotion" in seen["Overview"]["svg"]  # the annotation, on the trend
    assert "Autumn promotion" in seen["Brands"]["svg"]
    assert "no data" in seen["Overview"]["svg"]  # the outage's coverage gap
    # the incidents page lists each incident the book knows, once, under its id
    views = incident_book(month, load_settings(None, warehouse=month))
    assert views, "the month's checkout break was not detected"
    broke = sorted(
        f"{formats.segment_text(v.incident.root)}: {formats.what_text(v.incident.step, v.incident.kind)}"
        for v in views
    )
    assert "Whole shop: view → purchase drop" in broke  # the checkout break, in words
    listed = [c for c in seen["Anomalies"]["cells"] if c in broke]
    assert sorted(listed) == broke
    # why, in plain words: the opening firing's own counts over its own window
    why = r"Why: [\d,]+ purchases from [\d,]+ views in the \d+ hours from Oct 28 10:00 UTC, [\d,]+ expected"
    assert re.search(why, seen["Anomalies"]["text"]), seen["Anomalies"]["text"][:2000]
    # the price bands read cheapest first, as people write them
    bands = [c for c in seen["Price bands"]["cells"] if c in ("<10", "10-30", "30-60", "60+")]
    assert bands == ["<10", "10-30", "30-60", "60+"]
    # one line per alert, however many sinks it went to
    sent = tables.read(tables.table_path(month, tables.ALERTS)).to_pylist()
    alerts = {(r["incident_id"], r["message"]) for r in sent}
    assert seen["Live"]["text"].count(" · sent to ") == min(len(alerts), 20)


def test_every_page_on_the_bundled_sample(demo_warehouse: Pipeline, tmp_path: Path) -> None:
    warehouse = str(tmp_path / "demo")
    shutil.copytree(demo_warehouse.warehouse, warehouse)  # the shared fixture stays as it is
    annotations.add(
        warehouse,
        datetime(2019, 10, 31, 10, tzinfo=UTC),
        datetime(2019, 10, 31, 14, tzinfo=UTC),
        "Halloween sale",
    )
    shots_dir = tmp_path / "shots"
    shots_dir.mkdir()
    saved = dict(shots.SHOTS)
    shots.SHOTS["Overview, one day"] = ("?from=2019-10-31&to=2019-10-31", "Funnel overview",
                                        "overview-day.png")  # fmt: skip
    try:
        with running_dashboard(warehouse, timeout_s=90) as url, browser() as b:
            seen = _visit(b, url, shots_dir)
    finally:
        shots.SHOTS.clear()
        shots.SHOTS.update(saved)
    _check_every_page(seen)
    day = seen["Overview, one day"]
    assert len(set(_hourly(day))) >= 8, day["xticks"]
    assert "Halloween sale" in day["svg"]
    assert "Halloween sale" in seen["Overview"]["svg"]
    # Oct 31 is shown on its own day, not on a tick labelled with the next month
    assert "No change shown" in seen["Overview"]["text"]  # nothing before October: it says why
