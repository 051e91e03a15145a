"""Overview: is the funnel healthy? KPIs, the funnel with its drop-offs, trends, previous period."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from funnelpulse.dashboard.common import (
    data,
    filters,
    mark_known,
    md,
    money,
    nothing_selected,
    page_header,
    pct,
    require_gold,
)

page_header("Funnel overview")
d = data()
bounds = require_gold(d)
if bounds is not None:
    f = filters(d, bounds, "brand", "Brands")
    now, before = d.funnel(f), d.funnel(f.previous())
    if not now["views"] and not now["carts"] and not now["purchases"]:
        nothing_selected()
    else:
        st.caption(
            f"{f.start} .. {f.end} (UTC), compared with the previous {(f.end - f.start).days + 1} days"
            + (f" · brands: {', '.join(md(v) for v in f.values)}" if f.values else "")
        )

        def delta(key: str, rate: bool = False) -> str | None:
            if before[key] is None or not before["views"] and not before["purchases"]:
                return None
            if rate:
                return f"{(now[key] or 0) * 100 - before[key] * 100:+.1f} pp"
            return f"{(now[key] - before[key]) / before[key] * 100:+.1f}%" if before[key] else None

        cols = st.columns(4)
        cols[0].metric("Views", f"{now['views']:,}", delta("views"))
        cols[1].metric("Carts", f"{now['carts']:,}", delta("carts"))
        cols[2].metric("Purchases", f"{now['purchases']:,}", delta("purchases"))
        cols[3].metric("Revenue", money(now["revenue"]), delta("revenue"))
        cols = st.columns(4)
        cols[0].metric(
            "View → cart", pct(now["view_to_cart_rate"]), delta("view_to_cart_rate", True)
        )
        cols[1].metric(
            "Cart → purchase",
            pct(now["cart_to_purchase_rate"]),
            delta("cart_to_purchase_rate", True),
        )
        cols[2].metric(
            "View → purchase", pct(now["conversion_rate"]), delta("conversion_rate", True)
        )
        count = d.anomaly_count(f)
        cols[3].metric("Anomalies", "n/a" if count is None else f"{count:,}")

        left, right = st.columns(2)
        with left:
            st.subheader("Funnel")
            figure = go.Figure(
                go.Funnel(
                    y=["Views", "Carts", "Purchases"],
                    x=[now["views"], now["carts"], now["purchases"]],
                    texttemplate="%{value:,}<br>%{percentPrevious:.0%} of previous step",
                )
            )
            figure.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10})
            st.plotly_chart(figure, width="stretch")
            st.markdown(
                f"Drop-off: view → cart **{pct(now['view_to_cart_rate'])}** kept, "
                f"cart → purchase **{pct(now['cart_to_purchase_rate'])}** kept "
                "(event-count ratios; they can exceed 100%)."
            )
        with right:
            st.subheader("Conversion and revenue over time")
            daily = d.daily(f).to_pandas()
            trend = go.Figure()
            trend.add_scatter(
                x=daily["date"], y=daily["conversion_rate"], name="view → purchase", yaxis="y"
            )
            trend.add_bar(
                x=daily["date"], y=daily["revenue"], name="revenue", yaxis="y2", opacity=0.35
            )
            trend.update_layout(
                height=360,
                margin={"l": 10, "r": 10, "t": 10, "b": 10},
                yaxis={"title": "conversion", "tickformat": ".1%"},
                yaxis2={"title": "revenue", "overlaying": "y", "side": "right"},
                legend={"orientation": "h"},
            )
            mark_known(trend, d, daily=True)
            st.plotly_chart(trend, width="stretch")
