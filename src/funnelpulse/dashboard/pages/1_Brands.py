"""Brands: leaderboard, traffic against conversion, and one brand's trend."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from funnelpulse.dashboard.common import (
    chart_text,
    data,
    filters,
    funnel_columns,
    nothing_selected,
    page_header,
    require_gold,
)

page_header("Brands")
d = data()
bounds = require_gold(d)
if bounds is not None:
    f = filters(d, bounds, "brand", "Brands")
    board = d.segments(f, "brand").to_pandas()
    if board.empty or not board["views"].sum() and not board["purchases"].sum():
        nothing_selected()
    else:
        st.subheader("Leaderboard")
        st.dataframe(
            board.rename(columns={"segment": "brand"}),
            hide_index=True,
            width="stretch",
            column_config=funnel_columns(),
        )
        st.subheader("Traffic against conversion")
        top = (
            board[board["views"] > 0]
            .head(60)
            .assign(segment=lambda t: t["segment"].map(chart_text))
        )
        scatter = px.scatter(
            top,
            x="views",
            y="conversion_rate",
            size="revenue",
            hover_name="segment",
            log_x=True,
            labels={"views": "views (log)", "conversion_rate": "view → purchase"},
        )
        scatter.update_layout(height=380, yaxis_tickformat=".0%")
        st.plotly_chart(scatter, width="stretch")
        st.subheader("Brand trend")
        brand = st.selectbox("Brand", board["segment"].tolist(), key="drill_brand")
        one = d.daily(type(f)(f.start, f.end, "brand", (brand,))).to_pandas()
        trend = px.line(
            one, x="date", y=["view_to_cart_rate", "cart_to_purchase_rate", "conversion_rate"]
        )
        trend.update_layout(height=320, yaxis_tickformat=".0%", legend_title_text="")
        st.plotly_chart(trend, width="stretch")
