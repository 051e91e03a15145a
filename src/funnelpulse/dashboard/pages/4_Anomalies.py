"""Incidents: one row per real event with its state, an incident's story in plain words, its
chart at its own resolution, the root cause, and acknowledge / mute (the CLI's code path)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from funnelpulse import tables
from funnelpulse.anomaly import incident_book as book
from funnelpulse.anomaly.session_rates import EVENT_STEP
from funnelpulse.dashboard import formats
from funnelpulse.dashboard.acting import act_on
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
    table,
    warehouse,
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
    rows = found.to_pylist()
    by_id = {r["anomaly_id"]: r for r in rows}
    views = [
        v
        for v in book.incident_book(warehouse(), settings())
        if v.incident.start.date() <= f.end and v.incident.end.date() >= f.start
    ]
    if not views and not rows:
        st.success(f"No incidents between {f.start} and {f.end}. The funnel looks healthy.")
        st.stop()
    cols = st.columns(4)
    cols[0].metric("Incidents", formats.count(len(views)))
    cols[1].metric("Not resolved", formats.count(sum(v.state != "resolved" for v in views)))
    cols[2].metric("Anomalous segment-hours", formats.count(len(rows)))
    lost = sum(v.incident.lost_revenue for v in views if v.incident.lost_revenue > 0)
    cols[3].metric("Estimated lost revenue", formats.short(lost, True), help=money(lost))

    st.subheader("Incidents")
    st.caption(
        "One row per real event, newest first: the segments one cause moved are one incident. "
        "The same list as `funnelpulse incidents list`."
    )
    listed = [
        {
            "State": v.state,
            "What broke": f"{formats.segment_text(v.incident.root)}: "
            f"{formats.what_text(v.incident.step or v.incident.steps[0], v.incident.kind or v.incident.types[0])}",
            "Since (UTC)": v.incident.start,
            "For": formats.duration((v.incident.end - v.incident.start).total_seconds()),
            "Lost purchases": round(max(v.incident.lost_purchases, 0.0)),
            "Lost revenue": round(max(v.incident.lost_revenue, 0.0), 2),
            "Severity": v.incident.severity,
            "Segments hit": len(v.incident.segments) or 1,
            "Driven by": formats.drivers_text(v.incident.drivers),
            "Incident": v.incident_id,
        }
        for v in views
    ]
    st.dataframe(
        listed,
        hide_index=True,
        width="stretch",
        column_config={
            "Since (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
            "Lost revenue": st.column_config.NumberColumn(format="accounting"),
            "Lost purchases": st.column_config.NumberColumn(format="localized"),
        },
    )

    if views:
        st.subheader("Incident timeline")
        timeline = px.timeline(
            [
                {
                    "segment": chart_text(formats.segment_text(v.incident.root)),
                    "start": v.incident.start,
                    "end": v.incident.end,
                    "Severity": v.incident.severity,
                    "what": formats.what_text(v.incident.step or v.incident.steps[0],
                                              v.incident.kind or v.incident.types[0]),
                }  # fmt: skip
                for v in views
            ],
            x_start="start",
            x_end="end",
            y="segment",
            color="Severity",
            color_discrete_map=formats.SEVERITY_COLOURS,
            category_orders={"Severity": list(formats.SEVERITY_ORDER)},
            hover_data={"what": True, "segment": False},
            labels={"segment": "", "what": "What"},
        )
        timeline.update_layout(
            height=max(260, 28 * len({v.incident.root for v in views}) + 140),
            xaxis=formats.time_axis(f.start, f.end),
            margin={"l": 10, "r": 10, "t": 30, "b": 10},
        )
        mark_known(timeline, d, f.start, f.end)
        st.plotly_chart(timeline, width="stretch")

        st.subheader("Incident")
        labels = [
            f"{v.incident.start:%Y-%m-%d %H:%M} · {listed[k]['What broke']} · {v.state}"
            for k, v in enumerate(views)
        ]
        pick = st.selectbox(
            "Incident (newest first)", range(len(views)), format_func=lambda k: labels[k],
            key="incident",
        )  # fmt: skip
        view = views[pick]
        incident = view.incident
        state = f"**{view.state.capitalize()}**" + (f" ({md(view.why)})" if view.why else "")
        st.markdown(
            f"{state} · {md(formats.segment_text(incident.root))} · since "
            f"{incident.start:%b %d %H:%M} UTC for "
            f"{formats.duration((incident.end - incident.start).total_seconds())} · "
            f"severity {incident.severity} · id `{incident.incident_id}`"
        )
        members = [by_id[a] for a in incident.anomaly_ids if a in by_id]
        root_rows = [
            r for r in members if f"{r['dimension']}:{r['segment']}" == incident.root
        ] or members
        # the root's most significant firing of the step that opened the incident
        opening = [r for r in root_rows if r["step"] == incident.step] or root_rows
        chosen: dict[str, Any] | None = max(opening, key=lambda r: abs(r["z"]), default=None)
        if chosen is not None:
            st.markdown(f"**Why:** {md(formats.why_text(chosen))}.")
            if incident.lost_revenue > 0:
                st.markdown(
                    f"**Lost:** about {formats.count(incident.lost_purchases)} purchases, "
                    f"{money(incident.lost_revenue)} of revenue."
                )
            band = d.expected_band(chosen, settings().history_days, days_around=1).to_pandas()
            chart = go.Figure()
            chart.add_scatter(
                x=band["hour"], y=band["high"], line={"width": 0}, showlegend=False,
                hoverinfo="skip",
            )  # fmt: skip
            chart.add_scatter(
                x=band["hour"],
                y=band["low"],
                fill="tonexty",
                line={"width": 0},
                name="Expected range (±3σ)",
                fillcolor="rgba(100,150,220,0.25)",
                hoverinfo="skip",
            )
            rate = chosen["step"] != "traffic"
            fmt = "%{y:.2%}" if rate else "%{y:,.0f}"
            chart.add_scatter(
                x=band["hour"], y=band["expected"], name="Expected",
                line={"dash": "dot", "color": "#555555"},
                hovertemplate=fmt + "<extra>Expected</extra>",
            )  # fmt: skip
            chart.add_scatter(
                x=band["hour"], y=band["observed"], name="Observed",
                line={"color": formats.PALETTE[0], "width": 2.5},
                hovertemplate=fmt + "<extra>Observed</extra>",
            )  # fmt: skip
            chart.add_vrect(
                x0=chosen["window_start"], x1=chosen["window_end"], fillcolor="#e6550d",
                opacity=0.15, line_width=0, annotation_text="window that fired",
                annotation_position="top right",
            )  # fmt: skip
            title = "Views per hour" if not rate else formats.label(
                {"conversion": "conversion_rate", "view_to_cart": "view_to_cart_rate",
                 "cart_to_purchase": "cart_to_purchase_rate"}.get(
                    EVENT_STEP.get(chosen["step"], chosen["step"]), chosen["step"])
            )  # fmt: skip
            day = chosen["window_start"].date()
            axis = formats.time_axis(day - timedelta(days=1), day + timedelta(days=1), "hour")
            high = band[["observed", "high"]].max(axis=None)
            chart.update_layout(
                height=340,
                xaxis=axis,
                yaxis=formats.value_axis([high], rate=rate, title=title),
                margin={"l": 10, "r": 10, "t": 30, "b": 10},
                legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
            )
            mark_known(chart, d, day - timedelta(days=1), day + timedelta(days=1))
            st.plotly_chart(chart, width="stretch")
            cause = d.root_cause(chosen)
            st.markdown(
                f"**Root cause:** {md(formats.humanise(cause.get('summary', 'not available')))}"
            )
            breakdowns = [(by, parts) for by, parts in cause.items() if by != "summary" and parts]
            if breakdowns:
                tabs = st.tabs([f"By {formats.label(by).lower()}" for by, _ in breakdowns])
                for tab, (by, parts) in zip(tabs, breakdowns, strict=True):
                    tab.dataframe(
                        formats.breakdown_rows(by, parts), hide_index=True, width="stretch"
                    )
        elif incident.drivers:
            st.markdown(f"**Driven by:** {md(formats.drivers_text(incident.drivers, 5))}")

        act_on(view)

    if rows:
        with st.expander(f"Anomalous segment-hours ({formats.count(len(rows))})"):
            rows_shown = found.drop_columns(["root_cause"]).to_pandas()
            traffic = rows_shown["step"] == "traffic"
            # a traffic firing's observed/expected are view counts, the others' are rates
            for column, shown in (("observed_rate", "observed"), ("expected_rate", "expected")):
                rows_shown[shown] = [
                    formats.count(v) if t else formats.pct(v, 2)
                    for v, t in zip(rows_shown[column], traffic, strict=True)
                ]
            rows_shown["step"] = [
                formats.what_text(s, k) for s, k in zip(rows_shown["step"], rows_shown["type"],
                                                        strict=True)
            ]  # fmt: skip
            table(rows_shown.drop(columns=["observed_rate", "expected_rate", "type"]))
