"""Anomalies: incident timeline, the table with severity and lost revenue, and a drill-in."""

from __future__ import annotations

import json
from typing import Any

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from funnelpulse import tables
from funnelpulse.anomaly.incidents import group_incidents
from funnelpulse.anomaly.session_rates import EVENT_STEP
from funnelpulse.dashboard.common import (
    chart_text,
    data,
    filters,
    mark_known,
    md,
    money,
    page_header,
    require_gold,
    settings,
)

page_header("Anomalies")
d = data()
bounds = require_gold(d)
if bounds is not None and not d.has(tables.ANOMALIES):
    st.info(
        "No anomalies table yet. Run `funnelpulse detect` (add `--alert` to notify), then reload."
    )
elif bounds is not None:
    f = filters(d, bounds, None)
    found = d.anomalies(f)
    if found.num_rows == 0:
        st.success(f"No anomalies between {f.start} and {f.end}. The funnel looks healthy.")
    else:
        rows = found.to_pylist()
        # one incident per real event: the lasting table `detect` records, else grouped here
        stored = d.incidents(f)
        incidents: list[dict[str, Any]] = (
            [
                {
                    "segment": chart_text(i["root"]),
                    "start": i["started_at"],
                    "end": i["ended_at"],
                    "severity": i["severity"],
                    "types": f"{i['step']} {i['kind']}",
                    "segments": len(json.loads(i["segments"] or "[]")),
                    "lost_revenue": i["lost_revenue"],
                }
                for i in stored
            ]
            if stored
            else [
                {
                    "segment": chart_text(i.root),
                    "start": i.start,
                    "end": i.end,
                    "severity": i.severity,
                    "types": ", ".join(i.types),
                    "segments": len(i.segments),
                    "lost_revenue": i.lost_revenue,
                }
                for i in group_incidents(rows)
            ]
        )
        cols = st.columns(3)
        cols[0].metric("Incidents", f"{len(incidents):,}")
        cols[1].metric("Anomalous segment-hours", f"{len(rows):,}")
        lost = sum(i["lost_revenue"] for i in incidents if i["lost_revenue"] > 0)
        cols[2].metric("Estimated lost revenue", money(lost))

        st.subheader("Incident timeline")
        timeline = px.timeline(
            incidents,
            x_start="start",
            x_end="end",
            y="segment",
            color="severity",
            color_discrete_map={
                "low": "#9ecae1",
                "medium": "#fdae6b",
                "high": "#e6550d",
                "critical": "#a50f15",
            },
            hover_data=["types", "segments"],
        )
        timeline.update_layout(height=max(260, 22 * len({i["segment"] for i in incidents}) + 120))
        mark_known(timeline, d)
        st.plotly_chart(timeline, width="stretch")

        st.subheader("Anomalies")
        table = found.drop_columns(["root_cause"]).to_pandas()
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                "lost_revenue": st.column_config.NumberColumn(format="%.2f"),
                "lost_purchases": st.column_config.NumberColumn(format="%.1f"),
                "z": st.column_config.NumberColumn(format="%.1f"),
            },
        )

        st.subheader("Drill-in")
        labels = {
            f"{r['window_start']:%Y-%m-%d %H:%M} · {r['dimension']} {r['segment']} · {r['step']} {r['type']} "
            f"({r['severity']}) · {r['anomaly_id']}": r
            for r in sorted(rows, key=lambda r: -abs(r["z"]))
        }
        chosen = labels[st.selectbox("Anomaly (worst first)", list(labels), key="anomaly")]
        band = d.expected_band(chosen, settings().history_days).to_pandas()
        chart = go.Figure()
        chart.add_scatter(
            x=band["hour"], y=band["high"], line={"width": 0}, showlegend=False, hoverinfo="skip"
        )
        chart.add_scatter(
            x=band["hour"],
            y=band["low"],
            fill="tonexty",
            line={"width": 0},
            name="expected band (±3σ)",
            fillcolor="rgba(100,150,220,0.25)",
        )
        chart.add_scatter(x=band["hour"], y=band["expected"], name="expected", line={"dash": "dot"})
        chart.add_scatter(x=band["hour"], y=band["observed"], name="observed")
        chart.add_vline(x=chosen["window_start"], line_color="red")
        mark_known(chart, d)
        title = "views" if chosen["step"] == "traffic" else chosen["step"]
        if chosen["step"] in EVENT_STEP:
            title = f"{EVENT_STEP[chosen['step']]} (event counts)"
        chart.update_layout(height=340, yaxis_title=title)
        st.plotly_chart(chart, width="stretch")
        cause = d.root_cause(chosen)
        st.markdown(f"**Root cause:** {md(cause.get('summary', 'not available'))}")
        for by, parts in cause.items():
            if by != "summary" and parts:
                st.caption(f"by {md(by)}")
                st.dataframe(parts, hide_index=True, width="stretch")
