"""Live: the streaming table's current hour and the newest alerts, refreshed every 10 seconds."""

from __future__ import annotations

import streamlit as st

from funnelpulse import tables
from funnelpulse.dashboard.common import data, page_header, pct

page_header("Live")


@st.fragment(run_every=10)
def live() -> None:
    d = data()
    if not d.has(tables.GOLD_STREAM):
        st.info(
            "No live table (`gold_stream_funnel_hourly_brand`) in this warehouse. It is written by "
            "the streaming job; this page refreshes every 10 s and shows it as soon as it exists."
        )
    else:
        current = d.live_current_hour().to_pandas()
        if current.empty:
            st.info("The live table is empty: waiting for the first events.")
        else:
            hour = current["window_start"].iloc[0]
            st.subheader(f"Current hour: {hour:%Y-%m-%d %H:%M} UTC")
            cols = st.columns(4)
            cols[0].metric("Views", f"{int(current['views'].sum()):,}")
            cols[1].metric("Carts", f"{int(current['carts'].sum()):,}")
            cols[2].metric("Purchases", f"{int(current['purchases'].sum()):,}")
            views = current["views"].sum()
            cols[3].metric(
                "View → purchase", pct(current["purchases"].sum() / views if views else None)
            )
            st.dataframe(current, hide_index=True, width="stretch")
    st.subheader("Newest alerts")
    if not d.has(tables.ALERTS):
        st.caption("No alerts sent yet (`funnelpulse detect --alert`).")
    else:
        st.dataframe(d.latest_alerts().to_pandas(), hide_index=True, width="stretch")
    st.caption("Refreshed every 10 seconds.")


live()
