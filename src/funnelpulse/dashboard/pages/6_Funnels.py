"""Funnels: how many sessions went view -> cart -> purchase, in order, within a window.

Computed from silver with the same function as `funnelpulse funnel`, so the numbers are equal.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from funnelpulse import funnel, queries
from funnelpulse.dashboard import formats
from funnelpulse.dashboard.common import (
    _versions,
    columns,
    data,
    filters,
    money,
    nothing_selected,
    page_header,
    pct,
    require_gold,
    settings,
    time_chart,
    warehouse,
)


def _memory() -> int | None:
    return settings().funnel_memory_mb or None


@st.cache_data(show_spinner=False, max_entries=32)
def _rows(
    path: str, versions: Any, spec: funnel.FunnelSpec, start: date, end: date, grain: str
) -> list[dict[str, Any]]:
    return queries.funnel(path, spec, start, end, grain, _memory()).data.rows


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
    problem = formats.window_problem(window_text)
    if problem:
        st.error(problem)
        st.stop()
    window = funnel.parse_window(window_text)
    path, versions = warehouse(), _versions(warehouse())
    spec = funnel.FunnelSpec(window, None, same_product, by_user)
    total = _rows(path, versions, spec, f.start, f.end, "total")
    row = total[0] if total else None
    one, many = formats.unit_words(by_user, same_product)
    unit = many.capitalize()
    if row is None or not row["sessions"]:
        nothing_selected()
        st.stop()
    st.caption(
        f"Entries {f.start} to {f.end} (UTC) · window {funnel.format_window(window)} · "
        f"counting {many}"
        + f" · {formats.count(row[f'events_without_{spec.unit_name}'])} events without a "
        f"{spec.unit_name} id are not counted"
    )
    cols = st.columns(3)
    cols[0].metric(f"{unit} entered", formats.short(row["sessions"]),
                   help=f"{formats.count(row['sessions'])} {many}")  # fmt: skip
    cols[1].metric("Carted", formats.short(row["carted"]), help=formats.count(row["carted"]))
    cols[2].metric(
        "Purchased", formats.short(row["purchased"]), help=formats.count(row["purchased"])
    )
    cols = st.columns(3)
    cols[0].metric("Entered → carted", pct(row["view_to_cart_rate"]))
    cols[1].metric("Carted → purchased", pct(row["cart_to_purchase_rate"]))
    cols[2].metric("Entered → purchased", pct(row["conversion_rate"]))
    last = st.columns(4)
    last[0].metric("Cart abandonment", pct(row["cart_abandonment_rate"]))
    last[1].metric(
        "Revenue (completed)", formats.short(row["revenue"], True), help=money(row["revenue"])
    )
    # the medians in the funnel command's own words, so the page and the command read alike
    last[2].metric("Median time to cart", funnel.format_duration(row["median_seconds_to_cart"]))
    last[3].metric(
        "Median cart → purchase", funnel.format_duration(row["median_seconds_cart_to_purchase"])
    )

    left, right = st.columns(2)
    with left:
        st.subheader("Ordered funnel")
        steps = ["Viewed", "Carted", "Purchased"]
        counts = [row["sessions"], row["carted"], row["purchased"]]
        chart = go.Figure(
            go.Funnel(
                y=steps,
                x=counts,
                texttemplate="%{value:,}<br>%{percentInitial:.0%} of entered<br>"
                "%{percentPrevious:.0%} of previous step",
                hovertemplate="%{y}: %{x:,}<extra></extra>",
            )
        )
        chart.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10})
        st.plotly_chart(chart, width="stretch")
        st.dataframe(
            [
                {
                    "Step": step,
                    unit: count,
                    "Of previous step": count / prev if prev else None,
                    "Of entered": count / counts[0] if counts[0] else None,
                    "Dropped": prev - count,
                }
                for step, count, prev in zip(steps, counts, [counts[0], *counts[:2]], strict=True)
            ],
            hide_index=True,
            width="stretch",
            column_config={
                unit: st.column_config.NumberColumn(format="localized"),
                "Of previous step": st.column_config.NumberColumn(format="percent"),
                "Of entered": st.column_config.NumberColumn(format="percent"),
                "Dropped": st.column_config.NumberColumn(format="localized"),
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
        chart = px.histogram(
            long,
            x="minutes",
            color="step",
            nbins=60,
            barmode="overlay",
            labels={"minutes": "Minutes to convert", "step": "Step"},
            color_discrete_sequence=formats.PALETTE,
        )
        chart.update_layout(
            height=320, yaxis_title=unit, margin={"t": 10}, yaxis_tickformat=",~r"
        )
        st.plotly_chart(chart, width="stretch")
        st.caption(
            f"90th percentile to cart {formats.duration(row['p90_seconds_to_cart'])} · to purchase "
            f"{formats.duration(row['p90_seconds_cart_to_purchase'])}"
        )

    st.subheader("Abandonment and conversion per day (by entry date)")
    daily = [r for r in _rows(path, versions, spec, f.start, f.end, "date") if r["sessions"]]
    chart = go.Figure()
    for colour, (k, name) in zip(
        formats.PALETTE,
        (("cart_abandonment_rate", "Cart abandonment"), ("conversion_rate", "Entered → purchased")),
        strict=False,
    ):
        chart.add_scatter(
            x=[r["date"] for r in daily],
            y=[r[k] for r in daily],
            name=name,
            mode="lines+markers",
            line={"color": colour},
            hovertemplate="%{y:.1%}<extra>" + name + "</extra>",
        )
    chart.update_layout(
        yaxis=formats.value_axis(
            [r[k] for r in daily for k in ("cart_abandonment_rate", "conversion_rate")],
            rate=True,
            title="Rate",
        )
    )
    time_chart(chart, d, f, "day", height=320)

    key = funnel.BREAKDOWNS[by][1]
    st.subheader(f"By {by.replace('_', ' ')} (held constant)")
    table_rows = _rows(
        path,
        versions,
        funnel.FunnelSpec(window, by, same_product, by_user),
        f.start,
        f.end,
        "total",
    )
    shown = [
        {
            key: (
                "(unknown)" if r[key] is None
                else formats.band_label(r[key]) if key == "price_band" else r[key]
            ),
            **{
                m: formats.duration(r[m]) if "seconds" in m else r[m]
                for m in funnel.MEASURES
            },
        }
        for r in table_rows
    ]  # fmt: skip
    settings_for = columns([key, *funnel.MEASURES])
    settings_for["sessions"] = st.column_config.NumberColumn(unit, format="localized")
    st.dataframe(shown, hide_index=True, width="stretch", column_config=settings_for)
