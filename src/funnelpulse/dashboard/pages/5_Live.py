"""Live: the streaming table's current hour and the newest alerts, refreshed every 10 seconds."""

from __future__ import annotations

import json
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from funnelpulse import tables
from funnelpulse.anomaly import incident_book as book
from funnelpulse.anomaly.live_incidents import read_incidents
from funnelpulse.anomaly.live_view import live_series
from funnelpulse.dashboard import formats
from funnelpulse.dashboard.acting import act_on
from funnelpulse.dashboard.common import (
    chart_text,
    data,
    mark_known,
    md,
    money,
    page_header,
    pct,
    settings,
    table,
    warehouse,
)

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
            table(current.drop(columns=["window_start"]))
    st.subheader("Newest alerts")
    if not d.has(tables.ALERTS):
        st.caption("No alerts sent yet (`funnelpulse detect --alert`).")
    else:
        alerts = d.latest_alerts()
        st.caption(
            "One line per alert (however many places it went to), the most recently sent first. "
            "Times are event time: when the incident started in the data (UTC)."
        )
        for a in alerts:
            when = a["incident_start"]
            where = formats.segment_text(f"{a['dimension']}:{a['segment']}")
            st.markdown(
                f"**{md(a['severity'] or '')}** · {md(where)}"
                + (f" · from {when:%Y-%m-%d %H:%M} UTC" if when else "")
                + f" · sent to {md(a['sent_to'])}  \n"
                f"{md(formats.humanise(a['message'] or ''))}"
            )
    st.caption("Refreshed every 10 seconds.")


live()


@st.fragment(run_every=10)
def live_incidents() -> None:
    """Open incidents from the open-window check, their running loss, and one segment's bucket
    series against its expected band (a fragment: only this part refreshes, no page flicker)."""
    minutes = settings().live_bucket_minutes
    d = data()
    st.subheader(f"Live incidents ({minutes}-minute buckets)")
    path = warehouse()
    if not tables.exists(tables.table_path(path, tables.GOLD_STREAM_BUCKETS)):
        st.caption(
            "No live buckets yet (`gold_stream_funnel_buckets`, written by "
            "`funnelpulse stream`)."
        )
        return
    found = read_incidents(path).to_pylist()
    current = [i for i in found if i["status"] == "open"]
    cols = st.columns(3)
    cols[0].metric("Open incidents", f"{len(current):,}")
    cols[1].metric("Purchases lost so far", f"{sum(i['lost_purchases'] for i in current):,.1f}")
    cols[2].metric("Revenue lost so far", money(sum(i["lost_revenue"] for i in current)))
    if not found:
        st.success("No live incident in the last 24 hours.")
        return
    # Each row's incident as `funnelpulse incidents list` knows it (its state: open,
    # acknowledged, muted, resolved): a root row carries the lasting id, the segments grouped
    # under it their own live ids, listed among its firings.
    views: dict[str, book.IncidentView] = {}
    for v in book.incident_book(path, settings()):
        if v.source == "live":
            views.setdefault(v.incident_id, v)
            for member in v.incident.anomaly_ids:
                views.setdefault(member, v)

    def state(i: dict[str, Any]) -> str:
        v = views.get(i["incident_id"])
        return v.state if v is not None else i["status"]

    st.dataframe(
        [
            {
                "State": state(i),
                "Segment": formats.segment_text(f"{i['dimension']}:{i['segment']}"),
                "What": formats.what_text(i["step"], i["type"]),
                "Since (UTC)": i["started_at"],
                "For": formats.duration(i["minutes"] * 60),
                "Lost purchases": round(i["lost_purchases"], 1),
                "Lost revenue": round(i["lost_revenue"], 2),
                "Driven by": ", ".join(
                    f"{x['segment']} {x['share']:.0%}" for x in json.loads(i["drivers"] or "[]")
                ),
            }
            for i in sorted(found, key=lambda r: (r["status"] != "open", r["started_at"]))
        ],
        hide_index=True,
        width="stretch",
        column_config={
            "Since (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
            "Lost revenue": st.column_config.NumberColumn(format="accounting"),
        },
    )
    labels = [
        f"{formats.segment_text(i['dimension'] + ':' + i['segment'])}: "
        f"{formats.what_text(i['step'], i['type'])} ({state(i)})"
        for i in found
    ]
    pick = st.selectbox("Segment", range(len(found)), format_func=lambda k: labels[k], key="inc")
    chosen = found[pick]
    view = views.get(chosen["incident_id"])
    if view is not None:
        if view.incident_id != chosen["incident_id"]:
            st.caption(
                f"Part of the incident {md(view.incident_id)} "
                f"({md(formats.segment_text(view.incident.root))}): acting on it acts on that "
                "incident."
            )
        act_on(view, key="live_act")
    series = live_series(
        path, settings(), chosen["dimension"], chosen["segment"], chosen["step"]
    ).to_pandas()
    if series.empty:
        st.caption("No buckets to show yet.")
        return
    unit = {
        "traffic": "views",
        "view_to_cart": "carts",
        "cart_to_purchase": "purchases",
        "purchases": "purchases",
    }
    fig = go.Figure(
        [
            go.Scatter(
                x=series["bucket_start"],
                y=series["high"],
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            ),
            go.Scatter(
                x=series["bucket_start"],
                y=series["low"],
                fill="tonexty",
                line={"width": 0},
                name="expected band (~95%)",
                fillcolor="rgba(100,150,220,0.25)",
            ),
            go.Scatter(
                x=series["bucket_start"],
                y=series["expected"],
                name="expected",
                line={"dash": "dot"},
            ),
            go.Scatter(
                x=series["bucket_start"],
                y=series["observed"],
                name="observed",
                mode="lines+markers",
            ),
        ]
    )
    fig.update_layout(
        title=chart_text(
            f"{formats.segment_text(chosen['dimension'] + ':' + chosen['segment'])}: "
            f"{unit.get(chosen['step'], '')} per {minutes} minutes"
        ),
        height=340,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": {"text": "Event time (UTC)"}, "tickformat": "%H:%M<br>%b %d"},
        yaxis=formats.value_axis(
            list(series["observed"]) + list(series["high"]), title=unit.get(chosen["step"], "")
        ),
    )
    mark_known(fig, d)
    st.plotly_chart(fig, width="stretch")
    st.caption(
        f"Selected: {md(chosen['dimension'])} {md(chosen['segment'])}. Refreshed every 10 s."
    )


live_incidents()
