"""One page body for a segment dimension (categories, price bands): trends and a detail table."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from .common import data, filters, nothing_selected, page_header, require_gold


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
        column_config={
            "revenue": st.column_config.NumberColumn(format="%.2f"),
            "avg_order_value": st.column_config.NumberColumn("AOV", format="%.2f"),
            "view_to_cart_rate": st.column_config.NumberColumn("view→cart", format="percent"),
            "cart_to_purchase_rate": st.column_config.NumberColumn(
                "cart→purchase", format="percent"
            ),
            "conversion_rate": st.column_config.NumberColumn("view→purchase", format="percent"),
        },
    )
