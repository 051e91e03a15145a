"""One page body for a segment dimension (categories, price bands): trends and a detail table."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from . import formats
from .common import (
    chart_text,
    data,
    filters,
    md,
    nothing_selected,
    page_header,
    require_gold,
    table,
    time_chart,
)

DOMINANT_SHARE = 0.5  # a segment with more revenue than this hides the others on a shared axis


def render(title: str, column: str, label: str) -> None:
    page_header(title)
    d = data()
    bounds = require_gold(d)
    if bounds is None:
        return
    f = filters(d, bounds, column, label)
    detail = d.segments(f, column).to_pandas()
    if detail.empty or not detail["views"].sum() and not detail["purchases"].sum():
        nothing_selected()
        return
    grain = formats.grain(f.start, f.end)
    if not d.can_hourly(column):
        grain = "day"
    series = d.series(f, grain, by=column).to_pandas()
    bands = column == "price_band"
    if bands:
        detail["segment"] = detail["segment"].map(formats.band_label)
        series["segment"] = series["segment"].map(formats.band_label)
    order = detail["segment"].tolist()  # revenue order (price bands: cheapest first)
    colours = formats.ordered_colours(order)
    total = float(detail["revenue"].sum())
    biggest = detail.sort_values("revenue", ascending=False).iloc[0]
    apart = (
        not bands
        and total > 0
        and len(order) > 1
        and biggest["revenue"] / total > DOMINANT_SHARE
    )
    left, right = st.columns(2)
    with left:
        st.subheader("Revenue per hour" if grain == "hour" else "Revenue per day")
        shown = order
        if apart:
            keep = st.checkbox(
                f"Include {biggest['segment']} ({biggest['revenue'] / total:.0%} of revenue)",
                value=False,
                key=f"include_{column}",
            )
            if not keep:
                shown = [s for s in order if s != biggest["segment"]]
                st.caption(
                    f"{md(biggest['segment'])} has {biggest['revenue'] / total:.0%} of "
                    "the revenue and is left out so the others can be read; tick the box to add it."
                )
        chart = go.Figure()
        for name in shown[:12]:
            part = series[series["segment"] == name]
            chart.add_scatter(
                x=part["date"],
                y=part["revenue"],
                name=chart_text(name),
                line={"color": colours[name]},
                hovertemplate="%{y:,.2f}<extra>" + chart_text(name) + "</extra>",
            )
        values = series[series["segment"].isin(shown[:12])]["revenue"]
        chart.update_layout(
            yaxis=formats.value_axis(values, title="Revenue"), legend_title_text=label
        )
        time_chart(chart, d, f, grain)
    with right:
        st.subheader("View → purchase per hour" if grain == "hour" else "View → purchase per day")
        chart = go.Figure()
        for name in order[:12]:
            part = series[series["segment"] == name]
            chart.add_scatter(
                x=part["date"],
                y=part["conversion_rate"],
                name=chart_text(name),
                line={"color": colours[name]},
                hovertemplate="%{y:.2%}<extra>" + chart_text(name) + "</extra>",
            )
        chart.update_layout(
            yaxis=formats.value_axis(
                series["conversion_rate"], rate=True, title="View → purchase"
            ),
            legend_title_text=label,
        )
        time_chart(chart, d, f, grain)
    if len(order) > 12:
        st.caption(f"Charts show the 12 {label.lower()} values with the most revenue.")
    st.subheader("Detail")
    table(detail.rename(columns={"segment": column}))

