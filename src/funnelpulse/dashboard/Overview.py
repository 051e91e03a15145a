"""Overview: is the funnel healthy? KPIs, the funnel with its drop-offs, trends, previous period."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from funnelpulse.dashboard import formats
from funnelpulse.dashboard.common import (
    data,
    filters,
    md,
    nothing_selected,
    page_header,
    pct,
    require_gold,
    time_chart,
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
        days = (f.end - f.start).days + 1
        earlier = bool(before["views"] or before["carts"] or before["purchases"])
        st.caption(
            f"{f.start} to {f.end} (UTC) · {formats.previous_note(days, f.start, earlier)}"
            + (f" · brands: {', '.join(md(v) for v in f.values)}" if f.values else "")
        )

        def delta(key: str, rate: bool = False) -> str | None:
            if not earlier or before[key] is None:
                return None
            if rate:
                return f"{(now[key] or 0) * 100 - before[key] * 100:+.1f} pp"
            return f"{(now[key] - before[key]) / before[key] * 100:+.1f}%" if before[key] else None

        cols = st.columns(4)
        for col, key, name, money_digits in (
            (cols[0], "views", "Views", False),
            (cols[1], "carts", "Carts", False),
            (cols[2], "purchases", "Purchases", False),
            (cols[3], "revenue", "Revenue", True),
        ):
            full = formats.money(now[key]) if money_digits else formats.count(now[key])
            col.metric(name, formats.short(now[key], money_digits), delta(key), help=full)
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
        count = d.incident_count(f)
        cols[3].metric(
            "Incidents",
            "n/a" if count is None else formats.count(count),
            help="Real events found by `funnelpulse detect` (one per incident, however many "
            "segments and hours it touched), overlapping these dates",
        )

        left, right = st.columns(2)
        with left:
            st.subheader("Funnel")
            figure = go.Figure(
                go.Funnel(
                    y=["Views", "Carts", "Purchases"],
                    x=[now["views"], now["carts"], now["purchases"]],
                    texttemplate="%{value:,}<br>%{percentPrevious:.0%} of previous step",
                    hovertemplate="%{y}: %{x:,}<extra></extra>",
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
            grain = formats.grain(f.start, f.end)
            st.subheader(
                "Conversion and revenue per hour" if grain == "hour" else
                "Conversion and revenue per day"
            )  # fmt: skip
            series = d.series(f, grain).to_pandas()
            trend = go.Figure()
            trend.add_bar(
                x=series["date"],
                y=series["revenue"],
                name="Revenue",
                yaxis="y2",
                marker={"color": formats.PALETTE[1]},
                opacity=0.4,
                hovertemplate="%{y:,.2f}<extra>Revenue</extra>",
            )
            trend.add_scatter(
                x=series["date"],
                y=series["conversion_rate"],
                name="View → purchase",
                line={"color": formats.PALETTE[0], "width": 2.5},
                mode="lines+markers" if len(series) <= 48 else "lines",
                hovertemplate="%{y:.2%}<extra>View → purchase</extra>",
            )
            revenue_axis = formats.value_axis(series["revenue"], title="Revenue")
            trend.update_layout(
                yaxis=formats.value_axis(series["conversion_rate"], rate=True, title="View → purchase"),
                yaxis2={**revenue_axis, "overlaying": "y", "side": "right", "showgrid": False},
            )
            time_chart(trend, d, f, grain, height=360)
