"""Brands: leaderboard, traffic against conversion, and one brand's trend."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from funnelpulse.dashboard import formats
from funnelpulse.dashboard.common import (
    chart_text,
    data,
    filters,
    nothing_selected,
    page_header,
    require_gold,
    table,
    time_chart,
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
        table(board.rename(columns={"segment": "brand"}))
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
            labels={
                "views": "Views",
                "conversion_rate": "View → purchase",
                "revenue": "Revenue",
            },
            hover_data={"views": ":,", "conversion_rate": ":.2%", "revenue": ":,.2f"},
        )
        scatter.update_layout(
            height=380,
            xaxis=formats.log_axis("Views (log scale)"),
            yaxis=formats.value_axis(top["conversion_rate"], rate=True, title="View → purchase"),
        )
        st.plotly_chart(scatter, width="stretch")
        st.subheader("Brand trend")
        brand = st.selectbox("Brand", board["segment"].tolist(), key="drill_brand")
        grain = formats.grain(f.start, f.end)
        one = d.series(type(f)(f.start, f.end, "brand", (brand,)), grain).to_pandas()
        trend = go.Figure()
        rates = ("view_to_cart_rate", "cart_to_purchase_rate", "conversion_rate")
        for colour, rate in zip(formats.PALETTE, rates, strict=False):
            trend.add_scatter(
                x=one["date"],
                y=one[rate],
                name=formats.label(rate),
                line={"color": colour},
                hovertemplate=f"%{{y:.2%}}<extra>{formats.label(rate)}</extra>",
            )
        top_rate = max((one[r].max() for r in rates if one[r].notna().any()), default=0)
        trend.update_layout(yaxis=formats.value_axis([top_rate], rate=True, title="Rate"))
        time_chart(trend, d, f, grain, height=320)
