"""Dashboard benchmark: seconds until each page is fully rendered in headless chromium.

Usage: python benchmarks/bench_dashboard.py [--rows 9000000] [--screenshot docs/overview.png]
Builds (once) a warehouse from the generated data set, runs `funnelpulse detect`, serves the
dashboard, and opens every page twice in a real browser: the first visit of each page (cold
for that page) and a second visit (warm caches). A page counts as rendered when its heading,
charts and tables are on screen and Streamlit has no placeholder left.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from browser_tools import PAGES, browser, open_page, running_dashboard  # noqa: E402


def prepare(rows: int, folder: Path) -> Path:
    csv = folder / f"events-{rows}-seed0.csv"
    warehouse = folder / f"dashboard-warehouse-{rows}"
    fp = [sys.executable, "-m", "funnelpulse", "-q", "--warehouse", str(warehouse)]
    if not csv.exists():
        subprocess.run(
            [*fp, "generate", "--shape", "plain", "--rows", str(rows), "--out", str(csv)],
            check=True,
        )
    if not (warehouse / "gold_funnel_hourly_brand").exists():
        subprocess.run([*fp, "ingest", str(csv)], check=True)
        subprocess.run([*fp, "build"], check=True)
        subprocess.run([*fp, "detect"], check=True, stdout=subprocess.DEVNULL)
    return warehouse


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=9_000_000)
    parser.add_argument("--data-dir", default=str(ROOT / "benchmarks" / "data"))
    parser.add_argument(
        "--warehouse", default=None, help="Use this warehouse instead of building one."
    )
    parser.add_argument("--screenshot", default=None, help="Save the Overview page as this PNG.")
    args = parser.parse_args()
    folder = Path(args.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    warehouse = Path(args.warehouse) if args.warehouse else prepare(args.rows, folder)
    print(f"warehouse: {warehouse}")
    with running_dashboard(str(warehouse)) as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        results = {}
        for visit in ("first", "second"):
            for name, (path, heading, selectors) in PAGES.items():
                results.setdefault(name, {})[visit] = open_page(
                    page, f"{url}/{path}", heading, selectors, 120_000
                )
            if visit == "first" and args.screenshot:
                open_page(page, url, *PAGES["Overview"][1:])
                page.screenshot(path=args.screenshot)
    print(f"{'page':<12} {'first visit':>12} {'second visit':>13}")
    for name, times in results.items():
        print(f"{name:<12} {times['first']:>10.2f} s {times['second']:>11.2f} s")


if __name__ == "__main__":
    main()
