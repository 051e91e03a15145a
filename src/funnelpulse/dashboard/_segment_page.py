"""One page body for a segment dimension (categories, price bands): trends and a detail table."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from .common import (
    chart_text,
    data,
    filters,
    funnel_columns,
    nothing_selected,
    page_header,
    require_gold,
)


def render(title: str, column: str, label: str) -> None:
    page_header(title)
    d = data()
    bounds = require_gold(d)
    if bounds is None:
        return
    f = filters(d, bounds, column, label)
    table = d.segments(f, column).to_pandas()
    if table.empty or not table["views"].sum() and not table["purchases"].sum():
        nothing_selected()
        return
    daily = d.daily(f, by=column).to_pandas()
    daily["segment"] = daily["segment"].map(chart_text)  # legend labels are data, not markup
    left, right = st.columns(2)
    with left:
        st.subheader("Revenue over time")
        chart = px.area(daily, x="date", y="revenue", color="segment")
        chart.update_layout(height=340, legend_title_text=label)
        st.plotly_chart(chart, width="stretch")
    with right:
        st.subheader("View → purchase over time")
        chart = px.line(daily, x="date", y="conversion_rate", color="segment")
        chart.update_layout(height=340, yaxis_tickformat=".0%", legend_title_text=label)
        st.plotly_chart(chart, width="stretch")
    st.subheader("Detail")
    st.dataframe(
        table.rename(columns={"segment": label}),
        hide_index=True,
        width="stretch",
        column_config=funnel_columns(),
    )
