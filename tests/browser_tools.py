"""Run the dashboard for real and drive Debian's chromium with Playwright (no browser download)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from funnelpulse.streaming.broker import free_port, wait_listening

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# page: (url path, heading to wait for, CSS selectors that must have rendered)
PAGES = {
    "Overview": ("", "Funnel overview", ['[data-testid="stMetricValue"]', ".js-plotly-plot"]),
    "Brands": (
        "Brands",
        "Leaderboard",
        ['[data-testid="stDataFrame"] [role="gridcell"]', ".js-plotly-plot"],
    ),
    "Categories": (
        "Categories",
        "Detail",
        ['[data-testid="stDataFrame"] [role="gridcell"]', ".js-plotly-plot"],
    ),
    "Price bands": (
        "Price_bands",
        "Detail",
        ['[data-testid="stDataFrame"] [role="gridcell"]', ".js-plotly-plot"],
    ),
    "Anomalies": (
        "Anomalies",
        "Anomalies",
        ['[data-testid="stMetricValue"], [data-testid="stAlert"]'],
    ),
    "Live": ("Live", "Newest alerts", ['[data-testid="stAlert"]']),
}


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def running_dashboard(warehouse: str, timeout_s: float = 60) -> Iterator[str]:
    """`funnelpulse dashboard` in a subprocess; yields its base URL once it answers (within
    `timeout_s`). The browser tests, the dashboard benchmark and scripts/screenshots.py use it."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "funnelpulse",
            "--warehouse",
            warehouse,
            "dashboard",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_listening(proc, port, timeout_s):
            if proc.poll() is not None:
                raise RuntimeError(f"dashboard exited: {proc.stdout.read() if proc.stdout else ''}")
            raise RuntimeError(f"dashboard did not start within {timeout_s:g} s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError(
            "chromium is not installed: `apt-get install chromium` (make test does it)"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(
    page: Any, url: str, heading: str, selectors: list[str], timeout_ms: int = 30_000
) -> float:
    """Load a page and wait for its key elements, not a fixed time; returns seconds to full render."""
    started = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name=heading).first.wait_for(timeout=timeout_ms)
    for selector in selectors:
        # grid cells are the data frame's accessible copy: attached to the page, never painted
        state = "attached" if "gridcell" in selector else "visible"
        page.locator(selector).first.wait_for(state=state, timeout=timeout_ms)
    # Skeletons are placeholders Streamlit shows until an element's data arrives.
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stSkeleton"]')
              && !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stSpinner"]')""",
        timeout=timeout_ms,
    )
    return time.perf_counter() - started
