"""Alerts from the stream: when windows of the live table become final, score the final hours
against the past (batch gold and earlier final live windows) with the seasonal method and alert
on the incidents among them.

The live table has hours x brands only, so the stream scores the shop and each brand (the batch
`detect` also scores price bands and explains the cause). Alerts go through the same sinks and the
same `alerts` table as `detect --alert`, so an incident is alerted once, whichever found it first,
and a restarted stream never resends.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TextIO

import pyarrow as pa
import pyarrow.compute as pc

from .. import tables
from ..config import Settings
from ..localdb import connect
from .alerts import AlertResult, send_alerts
from .annotations import blanks as annotated
from .coverage import blank
from .incidents import Detected, group_incidents
from .seasonal_method import seasonal
from .series import UNKNOWN, build_series

log = logging.getLogger(__name__)

# An incident that began up to this long before a newly final hour is still the same incident
# (same id), so a long incident is alerted once, when its first hour is final.
LOOKBACK = timedelta(hours=24)


@dataclass
class LiveAlerts:
    anomalies: int = 0
    incidents: int = 0
    delivery: AlertResult | None = None


def final_hours_cube(warehouse: str, live: pa.Table, first: datetime) -> pa.Table:
    """hour, brand, views, carts, purchases, revenue from `first` on: the `live` table's final
    windows, and batch gold for the hours the live table does not have."""
    batch_path = tables.table_path(warehouse, tables.GOLD_HOURLY_BRAND)
    columns = ["window_start", "brand", "views", "carts", "purchases", "revenue"]
    batch = (
        tables.dataset(batch_path).to_table(
            columns=columns, filter=pc.field("window_date") >= first.date()
        )
        if tables.exists(batch_path)
        else live.select(columns).slice(0, 0)
    )
    con = connect()
    try:
        con.register("live_all", live)
        con.register("batch", batch)
        since = f"TIMESTAMPTZ '{first.isoformat()}'"
        return con.sql(
            f"""
            SELECT window_start AS hour, coalesce(brand, '{UNKNOWN}') AS brand,
                views, carts, purchases, revenue
            FROM live_all WHERE is_final AND window_start >= {since}
            UNION ALL
            SELECT window_start, coalesce(brand, '{UNKNOWN}'), views, carts, purchases, revenue
            FROM batch
            WHERE window_start >= {since}
                AND window_start NOT IN (SELECT window_start FROM live_all)
            """
        ).to_arrow_table()
    finally:
        con.close()


def alert_live(
    warehouse: str,
    settings: Settings,
    *,
    sinks: Sequence[str] | None = None,
    stream: TextIO | None = None,
) -> LiveAlerts:
    """Score the live table's final hours of the last day (up to its latest final window) and
    alert on the incidents among them. Safe to call again: what was sent is never resent, and
    what a crash kept from being sent is sent by the next call."""
    path = tables.table_path(warehouse, tables.GOLD_STREAM)
    if not tables.exists(path):
        return LiveAlerts()
    live = tables.read(path)
    final = set(live.filter(live.column("is_final")).column("window_start").to_pylist())
    if not final:
        return LiveAlerts()
    latest = max(final)
    new = {h for h in final if h >= latest - LOOKBACK}
    recent = min(new) - LOOKBACK
    cube = final_hours_cube(warehouse, live, recent - timedelta(days=settings.history_days + 1))
    con = connect()
    try:
        con.register("cube", cube)
        series = build_series(con, settings.min_views * 10, dimensions=("shop", "brand"))
    finally:
        con.close()
    # hours neither ingested nor streamed are a coverage gap, annotated hours a known event
    series = blank(series, annotated(warehouse))
    rows = [r for r in seasonal(series, settings) if recent <= r["window_start"] <= latest]
    touching = [i for i in group_incidents(rows) if any(h in new for h in _hours(i))]
    ids = {a for i in touching for a in i.anomaly_ids}
    chosen = [r for r in rows if r["anomaly_id"] in ids]
    result = LiveAlerts(anomalies=len(chosen), incidents=len(touching))
    if chosen:
        result.delivery = send_alerts(
            warehouse, settings, chosen, sinks=sinks, stream=stream, source="stream"
        )
    return result


def alert_for_stream(
    warehouse: str, settings: Settings, sinks: Sequence[str] | None
) -> tuple[int, int]:
    """`alert_live` as a running stream calls it, whichever engine runs the stream: a failure is
    logged and the stream goes on (scoring must never stop the live table). Returns (sent, failed)."""
    try:
        found = alert_live(warehouse, settings, sinks=sinks)
    except Exception as exc:
        log.error("live alerts failed (%s: %s); the stream goes on", type(exc).__name__, exc)
        return 0, 0
    if not found.delivery:
        return 0, 0
    log.info(
        "alerts: %d incidents in final windows, %d sent, %d failed, %d already sent",
        found.incidents,
        found.delivery.sent,
        found.delivery.failed,
        found.delivery.skipped,
    )
    return found.delivery.sent, found.delivery.failed


def _hours(incident: Detected) -> list[datetime]:
    count = int((incident.end - incident.start) / timedelta(hours=1))
    return [incident.start + timedelta(hours=h) for h in range(count)]
