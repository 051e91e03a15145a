"""Regenerate the README's dashboard screenshots (docs/*.png) from the current pages.

    python scripts/screenshots.py              # builds a generated month in a temporary folder
    python scripts/screenshots.py --warehouse W --out docs

The month (October 2019, seed 7, the plain shape) has a checkout break on Oct 28 10:00-14:00, an hour-long outage
on Oct 25 (a coverage gap) and an annotated promotion on Oct 12, so every chart shows what it
draws. Debian's chromium drives the pages (never a downloaded browser).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# the dashboard and chromium the browser tests use, launched the same way
from browser_tools import browser, running_dashboard  # noqa: E402

INCIDENT_DAY = "2019-10-28"
# name: (url path and query, heading to wait for, file name)
SHOTS = {
    "Overview": ("", "Funnel overview", "overview.png"),
    "Overview, one day": (f"?from={INCIDENT_DAY}&to={INCIDENT_DAY}", "Funnel overview",
                          "overview-day.png"),  # fmt: skip
    "Brands": ("Brands", "Leaderboard", "brands.png"),
    "Categories": ("Categories", "Detail", "categories.png"),
    "Price bands": ("Price_bands", "Detail", "price-bands.png"),
    "Anomalies": ("Anomalies", "Anomalies", "incidents.png"),
    "Live": ("Live", "Newest alerts", "live.png"),
    "Funnels": ("Funnels", "Ordered funnel", "funnels.png"),
}
LABELS = [
    {"id": "break", "kind": "checkout_broken", "dimension": "shop", "segment": "all",
     "step": "purchase", "start": f"{INCIDENT_DAY}T10:00:00+00:00", "hours": 4, "factor": 0.05},
    {"id": "outage", "kind": "outage", "dimension": "shop", "segment": "all", "step": "traffic",
     "start": "2019-10-25T03:00:00+00:00", "hours": 2, "factor": 0.0},
]  # fmt: skip


def funnelpulse(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "funnelpulse", *args], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def build_month(root: Path) -> str:
    """A generated month with a known incident, a coverage gap, an annotation and sent alerts."""
    root.mkdir(parents=True, exist_ok=True)
    labels = root / "labels.json"
    labels.write_text(json.dumps(LABELS))
    events = root / "month.csv.gz"
    warehouse = str(root / "warehouse")
    funnelpulse("generate", "--rows", "620000", "--days", "31", "--seed", "7", "--promo-days",
                "0", "--shape", "plain", "--inject", str(labels), "--out", str(events))  # fmt: skip
    funnelpulse("--warehouse", warehouse, "ingest", str(events))
    funnelpulse("--warehouse", warehouse, "build")
    funnelpulse("--warehouse", warehouse, "annotate", "--start", "2019-10-12T08:00", "--end",
                "2019-10-12T20:00", "Autumn promotion")  # fmt: skip
    funnelpulse("--warehouse", warehouse, "detect", "--alert")
    return warehouse


def settle(page: Any, heading: str, timeout_ms: int = 60_000) -> None:
    """Wait for the page's heading, every chart and no placeholder left."""
    page.get_by_role("heading", name=heading).first.wait_for(timeout=timeout_ms)
    done = """() => !document.querySelector('[data-testid="stSkeleton"]')
              && !/Running|Stop/.test(
                   document.querySelector('[data-testid="stStatusWidget"]')?.innerText || '')
              && [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                   .every(c => c.querySelector('.main-svg'))"""
    page.wait_for_function(done, timeout=timeout_ms)
    page.wait_for_timeout(800)  # Plotly's last resize after layout
    page.wait_for_function(done, timeout=timeout_ms)  # still done: the script had ended


def capture(page: Any, path: Path, width: int = 1400) -> None:
    """The whole page: Streamlit scrolls inside its own main box, so the window is made as tall
    as that box's content first (a full-page screenshot alone stops at the window)."""
    height = page.evaluate(
        """() => Math.max(...[...document.querySelectorAll('[data-testid="stMain"], section, body')]
                 .map(e => e.scrollHeight))"""
    )
    page.set_viewport_size({"width": width, "height": min(int(height) + 40, 8000)})
    page.wait_for_timeout(1200)  # charts re-lay out to the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": 1000})


def shoot(url: str, out: Path, browser: Any) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    made = []
    for path, heading, name in SHOTS.values():
        page.goto(f"{url}/{path}", wait_until="domcontentloaded")
        settle(page, heading)
        capture(page, out / name)
        made.append(out / name)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", help="use this warehouse instead of building the month")
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "docs"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = args.warehouse or build_month(Path(tmp))
        try:
            with running_dashboard(warehouse, timeout_s=90) as url, browser() as b:
                for made in shoot(url, Path(args.out), b):
                    print(made)
        except RuntimeError as exc:  # no chromium, or the dashboard did not start
            raise SystemExit(f"Error: {exc}.") from None


if __name__ == "__main__":
    main()
