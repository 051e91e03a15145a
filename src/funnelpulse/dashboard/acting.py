"""Acknowledge and mute an incident from a page: the same functions as `funnelpulse incidents ack`
and `mute` (incident_book.decide / mute), recorded as done by the dashboard. The Anomalies and
Live pages both show this form."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from ..anomaly import incident_book as book
from . import formats
from .common import md, settings, warehouse

MUTE_HOURS = 4
BY = "dashboard"


def act_on(view: book.IncidentView, key: str = "act") -> None:
    """The Acknowledge / Mute form of one incident; acting records it and reruns the page."""
    incident = view.incident
    with st.form(f"{key}_{incident.incident_id}"):
        st.markdown("**Act on it** (the same as `funnelpulse incidents ack` / `mute`)")
        note = st.text_input("Note (optional)", key=f"{key}_note")
        left, right = st.columns(2)
        ack = left.form_submit_button(
            "Acknowledge", disabled=view.state in ("acknowledged", "resolved")
        )
        # a button's label is Markdown: the segment is data, never markup
        mute = right.form_submit_button(
            f"Mute {md(formats.segment_text(incident.root))} for {MUTE_HOURS} hours"
        )
    if ack:
        result = book.decide(
            warehouse(), settings(), incident.incident_id, "acknowledge", note, BY
        )
        st.session_state[f"{key}_done"] = (
            f"Acknowledged; {result.sent} notification(s) sent."
            if result.ok
            else f"Acknowledged, but {result.failed} notification(s) failed; they are sent "
            "again by the next `funnelpulse detect --alert`."
        )
        st.rerun()  # show the new state
    if mute:
        book.mute(
            warehouse(), incident.root, incident.step or None, timedelta(hours=MUTE_HOURS), note,
            BY,
        )  # fmt: skip
        st.session_state[f"{key}_done"] = (
            f"Muted for {MUTE_HOURS} hours: its notifications are held back until then."
        )
        st.rerun()
    if f"{key}_done" in st.session_state:
        st.success(st.session_state.pop(f"{key}_done"))
