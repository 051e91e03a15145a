"""Shared page pieces: the cached data handle, sidebar filters, empty states, number formats."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import streamlit as st

from .. import tables
from ..config import Settings, load_settings
from ..pipeline import Pipeline
from . import formats
from .data import DashboardData, Filter

log = logging.getLogger(__name__)

# Every ASCII punctuation character can be backslash-escaped in Markdown; escaping them all also
# defuses Streamlit's own syntax (`:red[...]`, `:material/icon:`, `$latex$`) and bare-URL links.
_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def md(value: object) -> str:
    """A data value (brand, category) safe inside st.markdown, captions and labels: never markup."""
    return _MARKDOWN.sub(r"\\\1", _CONTROL.sub(" ", str(value)))


def chart_text(value: object) -> str:
    """A data value safe as a Plotly label: its pseudo-HTML (`<a href>`, `<b>`) is shown, not obeyed."""
    text = _CONTROL.sub(" ", str(value))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def warehouse() -> str:
    return os.environ.get("FUNNELPULSE_WAREHOUSE", "./warehouse")


def pipeline() -> Pipeline:
    """The library with the settings `funnelpulse dashboard` was given (its --config travels in
    FUNNELPULSE_CONFIG), so every page judges with the same thresholds as the CLI."""
    return Pipeline(
        load_settings(os.environ.get("FUNNELPULSE_CONFIG") or None, warehouse=warehouse())
    )


def settings() -> Settings:
    return pipeline().settings


def _versions(path: str) -> tuple[tuple[str, int], ...]:
    """Changes whenever a table gets a new commit, so the cache never serves stale data."""
    out = []
    for name in tables.ALL_TABLES:
        log = Path(path, name, "_delta_log")
        if log.is_dir():
            out.append((name, len(list(log.glob("*.json")))))
    return tuple(out)


@st.cache_resource(show_spinner=False)
def _open(path: str, versions: tuple[tuple[str, int], ...]) -> DashboardData:
    return pipeline().dashboard_data()


def data() -> DashboardData:
    path = warehouse()
    return _open(path, _versions(path))


def page_header(title: str) -> None:
    # Viewers get no developer menu ("Deploy", "Clear cache") and no tracebacks with server
    # paths, however the app was started (`funnelpulse dashboard` also passes both as flags).
    st.set_option("client.toolbarMode", "viewer")
    st.set_option("client.showErrorDetails", "none")
    st.set_page_config(page_title=f"FunnelPulse · {title}", page_icon="📉", layout="wide")
    st.title(title)


def unreadable(exc: Exception) -> None:
    """A friendly box instead of a traceback; the details (with paths) go to the server log."""
    log.error("dashboard could not read the warehouse", exc_info=exc)
    st.error(
        "The warehouse could not be read. Run `funnelpulse report` on the server to see what is "
        "wrong (it says what to run), then reload this page."
    )


def require_gold(d: DashboardData) -> tuple[date, date] | None:
    """The warehouse's date range, or a friendly message saying what to run."""
    try:
        bounds = d.date_bounds()
    except Exception as exc:  # FunnelPulseError or a library's (Delta, DuckDB): never shown raw
        if type(exc).__module__.startswith("streamlit"):  # st.stop / rerun control flow
            raise
        unreadable(exc)
        return None
    if bounds is None:
        st.info(
            "No gold tables in this warehouse yet. Run `funnelpulse ingest FILE...` and "
            "`funnelpulse build` (or `funnelpulse demo`), then reload this page."
        )
    return bounds


def linked_range(bounds: tuple[date, date]) -> tuple[date, date]:
    """The dates a link asked for (`?from=2019-10-21&to=2019-10-21`), kept inside the data's
    bounds; the whole range when the link has none or they are not dates."""
    try:
        start = date.fromisoformat(st.query_params.get("from", "") or bounds[0].isoformat())
        end = date.fromisoformat(st.query_params.get("to", "") or start.isoformat())
    except ValueError:
        st.warning("The link's dates are not YYYY-MM-DD: showing every date instead.")
        return bounds
    if not st.query_params.get("from") and not st.query_params.get("to"):
        return bounds
    start, end = max(min(start, end), bounds[0]), min(max(start, end), bounds[1])
    return (start, end) if start <= end else bounds


def filters(
    d: DashboardData, bounds: tuple[date, date], column: str | None, label: str = ""
) -> Filter:
    """Date range (and a segment filter when the page has one) in the sidebar."""
    st.sidebar.header("Filters")
    picked = st.sidebar.date_input(
        "Date range (UTC)",
        value=linked_range(bounds),
        min_value=bounds[0],
        max_value=bounds[1],
        key="dates",
    )
    start, end = (picked[0], picked[-1]) if isinstance(picked, (tuple, list)) and picked else bounds
    values: tuple[str, ...] = ()
    if column:
        values = tuple(
            st.sidebar.multiselect(
                label or column,
                d.options(column),
                key=f"filter_{column}",
                format_func=formats.band_label if column == "price_band" else str,
            )
        )
    return Filter(start, end, column, values)


pct = formats.pct
money = formats.money


def nothing_selected() -> None:
    st.warning("No events match these filters. Widen the date range or clear the segment filter.")


def columns(names: Iterable[str]) -> dict[str, Any]:
    """Streamlit column settings for a table: every column under its human name, counts with
    thousands separators, money with two decimals, rates as percentages."""
    out: dict[str, Any] = {}
    for name in names:
        title = formats.label(name)
        if name.endswith("_rate"):
            out[name] = st.column_config.NumberColumn(title, format="percent")
        elif name in ("revenue", "avg_order_value", "lost_revenue"):
            out[name] = st.column_config.NumberColumn(title, format="accounting")
        elif name in ("z", "lost_purchases"):
            out[name] = st.column_config.NumberColumn(title, format="%.1f")
        elif name in formats.LABELS and name in (
            "views", "carts", "purchases", "sessions", "carted", "purchased",
            "events_without_session", "events_without_user", "numerator", "denominator",
        ):  # fmt: skip
            out[name] = st.column_config.NumberColumn(title, format="localized")
        elif "seconds" in name:
            out[name] = st.column_config.TextColumn(title)
        else:
            out[name] = st.column_config.Column(title)
    return out


def table(frame: Any, **kwargs: Any) -> None:
    """A data frame under human column names and number formats."""
    st.dataframe(
        frame, hide_index=True, width="stretch", column_config=columns(frame.columns), **kwargs
    )


def time_chart(chart: Any, d: DashboardData, f: Filter, grain: str, height: int = 340) -> None:
    """Lay out a time chart for the filter's dates (ticks on whole days or hours, each with its
    own date), mark coverage gaps and annotations on it, and show it."""
    chart.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis=formats.time_axis(f.start, f.end, grain),
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    mark_known(chart, d, f.start, f.end, daily=grain == "day")
    st.plotly_chart(chart, width="stretch")


def mark_known(
    chart: Any,
    d: DashboardData,
    start: date | None = None,
    end: date | None = None,
    daily: bool = False,
) -> None:
    """Draw coverage gaps (no data: grey) and annotations (known events: green) on a time chart.

    On a daily chart a gap or annotation shorter than a day is drawn over its day; marks outside
    start..end are left out (they would stretch the axis)."""

    def inside(a: Any, b: Any) -> bool:
        return (start is None or b.date() >= start) and (end is None or a.date() <= end)

    for gap in d.coverage_gaps():
        a, b = gap["start"], gap["end"]
        if not inside(a, b):
            continue
        if daily:
            a, b = a.date(), b.date() + timedelta(days=1)
        chart.add_vrect(
            x0=a, x1=b, fillcolor="#bbbbbb", opacity=0.35, line_width=0,
            annotation_text="no data", annotation_position="top left",
        )  # fmt: skip
    for note in d.annotations():
        a, b = note["start"], note["end"]
        if not inside(a, b):
            continue
        if daily:
            a, b = a.date(), b.date() + timedelta(days=1)
        chart.add_vrect(
            x0=a, x1=b, fillcolor="#74c476", opacity=0.25, line_width=0,
            annotation_text=chart_text(note["text"])[:40], annotation_position="top left",
            annotation_font={"color": "#1b5e20"},
        )  # fmt: skip
