"""Funnels: how many sessions went view -> cart -> purchase, in order, within a window.

Computed from silver with the same function as `funnelpulse funnel`, so the numbers are equal.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from funnelpulse import funnel
from funnelpulse.dashboard.common import (
    _versions,
    data,
    filters,
    money,
    nothing_selected,
    page_header,
    pct,
    require_gold,
    settings,
    warehouse,
)
from funnelpulse.errors import FunnelPulseError


def _memory() -> int | None:
    return settings().funnel_memory_mb or None


@st.cache_data(show_spinner=False, max_entries=32)
def _rows(
    path: str, versions: Any, spec: funnel.FunnelSpec, start: date, end: date, grain: str
) -> list[dict[str, Any]]:
    return funnel.query(path, spec, start, end, grain, _memory()).rows


@st.cache_data(show_spinner=False, max_entries=8)
def _times(path: str, versions: Any, spec: funnel.FunnelSpec, start: date, end: date) -> Any:
    return funnel.actors(path, spec, start, end, _memory()).to_pandas()


page_header("Funnels")
d = data()
bounds = require_gold(d)
if bounds is not None:
    f = filters(d, bounds, None)
    st.sidebar.header("Funnel")
    window_text = st.sidebar.text_input("Conversion window", "24h", key="window")
    by = st.sidebar.selectbox(
        "Breakdown", list(funnel.BREAKDOWNS), key="by", format_func=lambda b: b.replace("_", " ")
    )
    same_product = st.sidebar.checkbox("Same product through the funnel", key="same_product")
    by_user = st.sidebar.checkbox("Count users instead of sessions", key="by_user")
    try:
        window = funnel.parse_window(window_text)
    except FunnelPulseError as exc:
        st.error(str(exc))
        st.stop()
    path, versions = warehouse(), _versions(warehouse())
    spec = funnel.FunnelSpec(window, None, same_product, by_user)
    total = _rows(path, versions, spec, f.start, f.end, "total")
    row = total[0] if total else None
    unit = f"{spec.unit_name.capitalize()}s"
    if row is None or not row["sessions"]:
        nothing_selected()
        st.stop()
    st.caption(
        f"Entries {f.start} .. {f.end} (UTC) · window {funnel.format_window(window)} · "
        f"{'users' if by_user else 'sessions'}"
        + (" · same product" if same_product else "")
        + f" · {row[f'events_without_{spec.unit_name}']:,} events without a "
        f"{spec.unit_name} id are not counted"
    )
    cols = st.columns(5)
    cols[0].metric(f"{unit} entered", f"{row['sessions']:,}")
    cols[1].metric("Carted", f"{row['carted']:,}")
    cols[2].metric("Purchased", f"{row['purchased']:,}")
    cols[3].metric("Cart abandonment", pct(row["cart_abandonment_rate"]))
    cols[4].metric("Revenue (completed)", money(row["revenue"]))
    cols = st.columns(5)
    cols[0].metric("Entered → carted", pct(row["view_to_cart_rate"]))
    cols[1].metric("Carted → purchased", pct(row["cart_to_purchase_rate"]))
    cols[2].metric("Entered → purchased", pct(row["conversion_rate"]))
    cols[3].metric("Median time to cart", funnel.format_duration(row["median_seconds_to_cart"]))
    cols[4].metric(
        "Median cart → purchase", funnel.format_duration(row["median_seconds_cart_to_purchase"])
    )

    left, right = st.columns(2)
    with left:
        st.subheader("Ordered funnel")
        steps = ["Viewed", "Carted", "Purchased"]
        counts = [row["sessions"], row["carted"], row["purchased"]]
        chart = go.Figure(
            go.Funnel(y=steps, x=counts, textinfo="value+percent previous+percent initial")
        )
        chart.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10})
        st.plotly_chart(chart, width="stretch")
        st.dataframe(
            [
                {
                    "step": step,
                    unit.lower(): count,
                    "of previous": count / prev if prev else None,
                    "of entered": count / counts[0] if counts[0] else None,
                    "dropped": prev - count,
                }
                for step, count, prev in zip(steps, counts, [counts[0], *counts[:2]], strict=True)
            ],
            hide_index=True,
            width="stretch",
            column_config={
                "of previous": st.column_config.NumberColumn(format="percent"),
                "of entered": st.column_config.NumberColumn(format="percent"),
            },
        )
    with right:
        st.subheader("Time to convert")
        times = _times(path, versions, spec, f.start, f.end)
        long = (
            times[["seconds_to_cart", "seconds_to_purchase"]]
            .rename(
                columns={"seconds_to_cart": "view → cart", "seconds_to_purchase": "cart → purchase"}
            )
            .melt(var_name="step", value_name="seconds")
            .dropna()
        )
        long["minutes"] = long["seconds"] / 60
        chart = px.histogram(long, x="minutes", color="step", nbins=60, barmode="overlay")
        chart.update_layout(height=320, yaxis_title=unit.lower(), margin={"t": 10})
        st.plotly_chart(chart, width="stretch")
        st.caption(
            f"p90 to cart {funnel.format_duration(row['p90_seconds_to_cart'])} · p90 cart → purchase "
            f"{funnel.format_duration(row['p90_seconds_cart_to_purchase'])}"
        )

    st.subheader("Abandonment and conversion over time (by entry date)")
    daily = [r for r in _rows(path, versions, spec, f.start, f.end, "date") if r["sessions"]]
    chart = px.line(
        [
            {"date": r["date"], "rate": r[k], "measure": label}
            for r in daily
            for k, label in (
                ("cart_abandonment_rate", "cart abandonment"),
                ("conversion_rate", "entered → purchased"),
            )
        ],
        x="date",
        y="rate",
        color="measure",
        markers=True,
    )
    chart.update_layout(height=320, yaxis_tickformat=".0%")
    st.plotly_chart(chart, width="stretch")

    key = funnel.BREAKDOWNS[by][1]
    st.subheader(f"By {by.replace('_', ' ')} (held constant)")
    table = _rows(
        path,
        versions,
        funnel.FunnelSpec(window, by, same_product, by_user),
        f.start,
        f.end,
        "total",
    )
    st.dataframe(
        [
            {key: "(unknown)" if r[key] is None else r[key], **{m: r[m] for m in funnel.MEASURES}}
            for r in table
        ],
        hide_index=True,
        width="stretch",
        column_config={
            "sessions": st.column_config.NumberColumn(unit.lower()),
            "revenue": st.column_config.NumberColumn(format="%.2f"),
            **{
                m: st.column_config.NumberColumn(
                    m.replace("_rate", "").replace("_", " "), format="percent"
                )
                for m in funnel.MEASURES
                if m.endswith("_rate")
            },
        },
    )
