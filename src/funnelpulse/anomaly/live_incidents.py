"""Live incidents with a lifecycle: opened on the first firing window, updated (never re-sent)
while they last, closed with a "resolved" message when the rate is back.

Restart-safe by construction: the incidents are a deterministic function of durable data (the
live buckets and the batch history), recomputed over the last day on every check, and each
message (open, resolved) is delivered once per sink through the same journal, `alerts` table,
idempotency key and cool-down as batch alerts. A restart recomputes the same incidents and finds
their deliveries in the journal: nothing is resent, and what a crash kept from being sent is sent.
The live incidents of the segments one cause moved are grouped as batch firings are
(incidents.group_incidents) and announced once under their lasting id (incident_store), so an
incident found live is not alerted again when its hours become final.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from .. import tables
from ..config import Settings
from ..contract import INCIDENT_SCHEMA
from ..faults import checkpoint
from . import incident_store
from .alertlog import AlertLog
from .alerts import RETRY_DELAYS_S, AlertResult, deliver_once
from .incidents import Detected, group_incidents
from .live_data import load_grid, load_history, segment_keys
from .open_window import HourlyHistory, LiveGrid, Options, Scores, newest_complete, score
from .routes import forced_sinks, route
from .sink_registry import sink
from .sinks import plain
from .workflow import active_mutes, held_back, read_actions

log = logging.getLogger(__name__)

LOOKBACK = timedelta(hours=24)
RESOLVE_MINUTES = 15  # quiet this long, with the rate back, closes an incident
STALE_MINUTES = 120  # quiet this long closes it whatever the rate (too little traffic to tell)
SEND_BUDGET_S = 30.0  # no retry of one live notice starts after this long
# A notice whose delivery failed is tried again (same key) by the first check this long after.
RETRY_FAILED_AFTER_S = 120.0
_SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


@dataclass
class LiveIncident:
    incident_id: str
    dimension: str
    segment: str
    status: str
    step: str
    type: str
    severity: str
    started_at: datetime
    detected_at: datetime
    last_firing_at: datetime
    resolved_at: datetime | None
    as_of: datetime
    minutes: float
    window_minutes: int
    observed: float
    expected: float
    trials: float | None
    z: float
    p: float
    lost_purchases: float
    lost_revenue: float
    drivers: list[dict[str, Any]] = field(default_factory=list)


def _utc(value: np.datetime64) -> datetime:
    return value.astype("datetime64[us]").astype(datetime).replace(tzinfo=UTC)


def incident_id(dimension: str, segment: str, start: datetime) -> str:
    """The batch alerts' id of an incident starting at `start` (its hour)."""
    return f"{dimension}:{segment}:{start.strftime('%Y%m%dT%H')}"


def track(
    grid: LiveGrid, scores: Scores, opts: Options, upto: int | None = None
) -> list[LiveIncident]:
    """The incidents of every segment over the grid's buckets up to index `upto` (inclusive).

    Pure and deterministic: the same buckets give the same incidents, which is what makes a
    restart safe. An incident starts where its shortest firing window starts.
    """
    last = grid.values["views"].shape[1] - 1 if upto is None else upto
    if last < 0:
        return []
    width = timedelta(minutes=grid.bucket_minutes)
    quiet = max(1, RESOLVE_MINUTES // grid.bucket_minutes)
    stale = max(quiet, STALE_MINUTES // grid.bucket_minutes)
    as_of = _utc(grid.starts[last]) + width
    out: list[LiveIncident] = []
    for s, (dimension, segment) in enumerate(grid.keys):
        current: LiveIncident | None = None
        first_b = last_b = 0
        closed: datetime | None = None
        for b in range(last + 1):
            end = _utc(grid.starts[b]) + width
            start = end - timedelta(minutes=int(scores.first_minutes[s, b]))
            fired = bool(scores.fired[s, b])
            if fired and current is None and closed is not None and start < closed:
                continue  # every firing window still reaches into the closed incident: its echo
            if fired and current is not None and _back(grid, scores, s, b, quiet, current):
                fired = False  # a long window still holding the deficit, the rate already back
            if fired:
                if current is None:
                    # it began where the most significant window that first fired begins
                    minutes = int(scores.window_minutes[s, b])
                    first_b = max(0, b + 1 - minutes // grid.bucket_minutes)
                    began = end - timedelta(minutes=minutes)
                    current = _new(grid, scores, s, b, began, end, dimension, segment)
                    out.append(current)
                last_b = b
                current.last_firing_at = end
                _worst(current, scores, s, b)
            elif (
                current is not None
                and b - last_b >= quiet
                and (b - last_b >= stale or _back(grid, scores, s, b, quiet, current))
            ):
                current.status = "resolved"
                current.resolved_at = closed = end
                _finish(current, grid, scores, s, first_b, b, end)
                current = None
        if current is not None:
            _finish(current, grid, scores, s, first_b, last, as_of)
    for incident in out:
        incident.as_of = as_of
        if incident.dimension == "shop":
            incident.drivers = _drivers(grid, scores, incident)
    return sorted(out, key=lambda i: (i.started_at, i.dimension, i.segment))


def current_sign(incident: LiveIncident) -> float:
    return -1.0 if incident.type == "drop" else 1.0


def _new(
    grid: LiveGrid,
    scores: Scores,
    s: int,
    b: int,
    start: datetime,
    end: datetime,
    dimension: str,
    segment: str,
) -> LiveIncident:
    incident = LiveIncident(
        incident_id=incident_id(dimension, segment, start),
        dimension=dimension,
        segment=segment,
        status="open",
        step="",
        type="",
        severity="low",
        started_at=start,
        detected_at=end,
        last_firing_at=end,
        resolved_at=None,
        as_of=end,
        minutes=0.0,
        window_minutes=0,
        observed=0.0,
        expected=0.0,
        trials=None,
        z=0.0,
        p=1.0,
        lost_purchases=0.0,
        lost_revenue=0.0,
    )
    _worst(incident, scores, s, b)
    return incident


def _worst(incident: LiveIncident, scores: Scores, s: int, b: int) -> None:
    """Keep the most significant window of the incident (the one its message shows)."""
    if incident.step and scores.p[s, b] >= incident.p:
        return
    incident.step = str(scores.step[s, b])
    incident.type = "drop" if scores.sign[s, b] < 0 else "spike"
    incident.window_minutes = int(scores.window_minutes[s, b])
    incident.observed = float(scores.observed[s, b])
    incident.expected = float(scores.expected[s, b])
    trials = scores.trials[s, b]
    incident.trials = None if np.isnan(trials) else float(trials)
    incident.z = float(scores.z[s, b])
    incident.p = float(scores.p[s, b])
    from .scoring import severity

    level = str(severity(incident.z))
    if _SEVERITY_RANK[level] > _SEVERITY_RANK[incident.severity]:
        incident.severity = level


def _back(grid: LiveGrid, scores: Scores, s: int, b: int, k: int, incident: LiveIncident) -> bool:
    """The incident's measure over the last k buckets is within the smallest alerted change."""
    observed, expected = scores.per_bucket[incident.step]
    got = float(np.nansum(observed[s, b + 1 - k : b + 1]))
    want = float(np.nansum(expected[s, b + 1 - k : b + 1]))
    if want <= 0:
        return False
    ratio = got / want
    limit = scores.min_change
    return ratio >= 1 - limit if incident.type == "drop" else ratio <= 1 + limit


def _finish(
    incident: LiveIncident,
    grid: LiveGrid,
    scores: Scores,
    s: int,
    first_b: int,
    b: int,
    end: datetime,
) -> None:
    """Duration and the running loss: expected minus observed purchases since the start."""
    incident.minutes = (end - incident.started_at).total_seconds() / 60
    span = slice(first_b, b + 1)
    expected = np.nan_to_num(scores.expected_purchases[s, span])
    got = grid.values["purchases"][s, span]
    value = np.nan_to_num(scores.order_value[s, span])
    incident.lost_purchases = float(np.sum(expected - got))
    incident.lost_revenue = float(
        np.sum(expected * value) - np.sum(grid.values["revenue"][s, span])
    )


def _drivers(grid: LiveGrid, scores: Scores, incident: LiveIncident) -> list[dict[str, Any]]:
    """For a shop incident: the brands and price bands whose shortfall (or excess) in the fired
    step's events makes up at least 10% of the shop's, largest first."""
    if incident.step not in scores.per_bucket:
        return []
    observed, expected = scores.per_bucket[incident.step]
    start = np.datetime64(incident.started_at.replace(tzinfo=None), "us")
    end = np.datetime64((incident.resolved_at or incident.as_of).replace(tzinfo=None), "us")
    cols = (grid.starts >= start) & (grid.starts < end)
    gap = np.nansum(expected[:, cols] - observed[:, cols], axis=1) * -current_sign(incident)
    shop = grid.keys.index(("shop", "all"))
    total = gap[shop]
    if not total > 0:
        return []
    rows = []
    for i, (dimension, segment) in enumerate(grid.keys):
        if dimension != "shop" and gap[i] / total >= 0.1:
            rows.append(
                {"dimension": dimension, "segment": segment, "share": round(gap[i] / total, 3)}
            )
    return sorted(rows, key=lambda r: -r["share"])[:5]


# ---- messages and delivery ------------------------------------------------------------------

_STEP_WORDS = {
    "traffic": "views",
    "view_to_cart": "view to cart",
    "cart_to_purchase": "cart to purchase (checkout)",
    "purchases": "purchases (checkout)",
}


def _evidence(i: LiveIncident) -> str:
    if i.step in ("traffic", "purchases") or i.trials is None:
        unit = "purchases" if i.step == "purchases" else "views"
        return f"{i.observed:,.0f} {unit}, {i.expected:,.1f} expected"
    unit, verb = ("carts", "bought") if i.step == "cart_to_purchase" else ("views", "carted")
    return f"{i.observed:,.0f} of {i.trials:,.0f} {unit} {verb}, {i.expected:,.1f} expected"


def open_message(i: LiveIncident) -> str:
    """What was found, how long it has run, the loss so far and the segments behind it."""
    text = (
        f"[{i.severity.upper()}] LIVE {_STEP_WORDS.get(i.step, i.step)} {i.type} - "
        f"{i.dimension} {plain(i.segment)}, since {i.started_at:%Y-%m-%d %H:%M} UTC "
        f"({i.minutes:.0f} min so far, as of {(i.resolved_at or i.as_of):%H:%M} UTC). Last {i.window_minutes} min: "
        f"{_evidence(i)}, z {i.z:+.1f}. Estimated "
        f"{'lost' if i.lost_purchases >= 0 else 'extra'} so far: {abs(i.lost_purchases):,.1f} "
        f"purchases, revenue {abs(i.lost_revenue):,.2f}."
    )
    if i.drivers:
        groups = []
        for dimension, label in (("brand", "brands"), ("price_band", "price bands")):
            parts = [
                f"{plain(d['segment'])} {d['share']:.0%}"
                for d in i.drivers
                if d["dimension"] == dimension
            ]
            if parts:
                groups.append(f"{label} " + ", ".join(parts))
        text += " Driven by (share of the shop's shortfall): " + "; ".join(groups) + "."
    return text


def resolved_message(i: LiveIncident) -> str:
    return (
        f"[RESOLVED] LIVE {_STEP_WORDS.get(i.step, i.step)} {i.type} - {i.dimension} "
        f"{plain(i.segment)}: back to normal at {i.resolved_at:%Y-%m-%d %H:%M} UTC after "
        f"{i.minutes:.0f} min (since {i.started_at:%H:%M} UTC). Estimated "
        f"{'lost' if i.lost_purchases >= 0 else 'extra'}: {abs(i.lost_purchases):,.1f} purchases, "
        f"revenue {abs(i.lost_revenue):,.2f}."
    )


def _detected(i: LiveIncident, resolved: bool) -> Detected:
    return Detected(
        incident_id=i.incident_id + (":resolved" if resolved else ""),
        dimension=i.dimension,
        segment=i.segment,
        start=i.started_at,
        end=i.resolved_at or i.as_of,
        steps=[i.step],
        types=[i.type],
        severity=i.severity,
        worst_z=i.z,
        lost_purchases=i.lost_purchases,
        lost_revenue=i.lost_revenue,
        anomaly_ids=[],
        step=i.step,
        kind="drop" if i.type == "drop" else "spike",
    )


def _as_firing(i: LiveIncident) -> dict[str, Any]:
    """A live incident as a firing row, so live and batch group by the same rules."""
    cause: dict[str, Any] = {}
    for d in i.drivers:
        cause.setdefault(d["dimension"], []).append({"segment": d["segment"], "share": d["share"]})
    kind = "drop" if i.type == "drop" else "spike"
    return {
        "anomaly_id": i.incident_id,
        "window_start": i.started_at,
        "window_end": i.resolved_at or i.as_of,
        "window_hours": 1,
        "dimension": i.dimension,
        "segment": i.segment,
        "step": i.step,
        "type": f"traffic_{kind}" if i.step == "traffic" else kind,
        "z": i.z,
        "severity": i.severity,
        "lost_purchases": i.lost_purchases,
        "lost_revenue": i.lost_revenue,
        "root_cause": json.dumps(cause) if cause else None,
    }


@dataclass
class LiveGroup:
    """The live incidents of several segments that one cause moved: one notification."""

    incident: Detected  # its lasting id, root and segments
    root: LiveIncident  # the root segment's own incident (what the messages describe)
    members: list[LiveIncident]

    @property
    def resolved(self) -> bool:
        return all(m.status == "resolved" for m in self.members)


def group_live(
    warehouse: str, incidents: Sequence[LiveIncident], as_of: datetime | None = None
) -> list[LiveGroup]:
    """Group the live incidents by cause and give each group its lasting id (incidents table)."""
    if not incidents:
        return []
    by_id = {i.incident_id: i for i in incidents}
    found = group_incidents([_as_firing(i) for i in incidents])
    incident_store.record(warehouse, found, source="live", latest=as_of)
    groups = []
    for g in found:
        members = [by_id[a] for a in g.anomaly_ids]
        root = next(m for m in members if m.incident_id == g.root_anomaly_id)
        root.incident_id = g.incident_id  # the root's live incident carries the lasting id
        groups.append(LiveGroup(g, root, members))
    return groups


def _also(group: LiveGroup) -> str:
    others = [s for s in group.incident.segments if s != group.incident.root]
    if not others:
        return ""
    shown = ", ".join(plain(s) for s in others[:8])
    more = f" and {len(others) - 8} more" if len(others) > 8 else ""
    return f" Also moved ({len(others)} segments): {shown}{more}."


def deliver(
    warehouse: str,
    settings: Settings,
    incidents: Sequence[LiveIncident],
    *,
    sinks: Sequence[str] | None = None,
    stream: TextIO | None = None,
    retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
    groups: Sequence[LiveGroup] | None = None,
) -> AlertResult:
    """Send each real event's opening (and, once every segment it moved is back, its
    resolution) to every sink it is routed to, once: live incidents of segments one cause moved
    are grouped and announced once, under their lasting id; an opening held back by a mute or
    maintenance window is recorded as muted."""
    forced = forced_sinks(sinks, settings.alert_sinks)
    senders: dict[str, Any] = {}
    now = datetime.now(UTC)
    mutes = active_mutes(read_actions(warehouse), now)
    if groups is None:
        groups = group_live(warehouse, incidents, max((i.as_of for i in incidents), default=None))
    floor = _SEVERITY_RANK[settings.min_severity]
    cooldown = timedelta(hours=settings.cooldown_h)
    result = AlertResult()
    with AlertLog(warehouse) as journal:
        history = journal.history()
        done: dict[tuple[str, str], str] = {}
        failed_at: dict[tuple[str, str], datetime] = {}
        for r in history:  # a delivery that went through (or cooled down) outranks a failure
            pair = (r["incident_id"], r["sink"])
            if r["status"] in ("sent", "cooldown") or (
                r["status"] == "failed" and pair not in done
            ):
                done[pair] = r["status"]
            if r["status"] == "failed":
                failed_at[pair] = max(failed_at.get(pair, r["recorded_at"]), r["recorded_at"])
        retry_before = datetime.now(UTC) - timedelta(seconds=RETRY_FAILED_AFTER_S)

        def due(pair: tuple[str, str]) -> bool:
            status = done.get(pair)
            return status is None or (status == "failed" and failed_at[pair] <= retry_before)

        last_sent: dict[tuple[str, str, str], datetime] = {}
        for r in history:
            if r["status"] == "sent" and not r["incident_id"].endswith(":resolved"):
                key = (r["sink"], r["dimension"], r["segment"])
                last_sent[key] = max(last_sent.get(key, r["incident_start"]), r["incident_start"])
        muted = {(r["incident_id"], r["sink"]) for r in history if r["status"] == "muted"}
        for group in groups:
            if _SEVERITY_RANK[group.incident.severity] < floor:
                continue
            incident = group.root
            opening = _detected(incident, False)
            opening.segments = group.incident.segments
            said = open_message(incident) + _also(group)
            routed = route(opening, settings.routes, settings.alert_sinks, forced).sinks
            held = held_back(opening, mutes, settings.silences, now)
            for name in routed:
                pair = (incident.incident_id, name)
                if done.get(pair) in (None, "failed") and (
                    held or (group.resolved and pair in muted)
                ):
                    if held and pair not in muted:  # recorded once, sent when the mute ends
                        _record(journal, opening, name, "muted", said, 0, held)
                        muted.add(pair)
                    result.muted += bool(held)
                    continue
                if name not in senders:
                    senders[name] = sink(name, settings, stream or sys.stderr)
                notices: list[tuple[Detected, str]] = []
                waiting = False
                if due(pair):
                    notices.append((opening, said))
                elif done.get((incident.incident_id, name)) == "failed":
                    waiting = True
                resolved_id = incident.incident_id + ":resolved"
                if group.resolved and due((resolved_id, name)):
                    notices.append((_detected(incident, True), resolved_message(incident)))
                elif done.get((resolved_id, name)) == "failed":
                    waiting = True
                if waiting:
                    result.pending += 1
                elif not notices:
                    result.skipped += 1
                for notice, text in notices:
                    is_open = not notice.incident_id.endswith(":resolved")
                    key = (name, notice.dimension, notice.segment)
                    recent = last_sent.get(key)
                    if (
                        is_open
                        and recent is not None
                        and timedelta(0) < notice.start - recent < cooldown
                    ):
                        _record(journal, notice, name, "cooldown", text)
                        done[(notice.incident_id, name)] = "cooldown"
                        result.cooldown += 1
                        continue
                    if not is_open and done.get((incident.incident_id, name)) != "sent":
                        continue  # never resolve what was not announced (cool-down or failure)
                    _record(journal, notice, name, "sending", text)
                    checkpoint("alerts.live_before_send")
                    ok, attempts, error = _send(senders[name], notice, text, retry_delays_s)
                    checkpoint("alerts.live_after_send")
                    _record(
                        journal, notice, name, "sent" if ok else "failed", text, attempts, error
                    )
                    checkpoint("alerts.live_recorded")
                    done[(notice.incident_id, name)] = "sent" if ok else "failed"
                    if ok:
                        result.count(name, "sent")
                        if is_open:
                            last_sent[key] = notice.start
                    else:
                        result.count(name, "failed")
                        result.errors[name] = error or "failed"
                        break  # the resolution waits until the opening got through
    return result


def _send(
    send: Any, notice: Detected, text: str, delays_s: Sequence[float]
) -> tuple[bool, int, str | None]:
    """The batch alerts' delivery rules: retried only when the receiver certainly did not take it."""
    return deliver_once(send, notice, text, delays_s, time.monotonic() + SEND_BUDGET_S)


def _record(
    journal: AlertLog,
    notice: Detected,
    name: str,
    status: str,
    text: str,
    attempts: int = 0,
    error: str | None = None,
) -> None:
    journal.record(
        {
            "incident_id": notice.incident_id,
            "sink": name,
            "status": status,
            "attempts": attempts,
            "error": error,
            "severity": notice.severity,
            "dimension": notice.dimension,
            "segment": notice.segment,
            "incident_start": notice.start,
            "incident_end": notice.end,
            "message": text,
            "recorded_at": datetime.now(UTC),
        }
    )


# ---- the check the stream runs after a batch ------------------------------------------------


@dataclass
class LiveCheck:
    as_of: datetime | None = None
    segments: int = 0
    incidents: list[LiveIncident] = field(default_factory=list)
    delivery: AlertResult | None = None

    @property
    def open(self) -> list[LiveIncident]:
        return [i for i in self.incidents if i.status == "open"]


def options(settings: Settings, **overrides: Any) -> Options:
    """Open-window options from the settings (history days, target false alerts)."""
    values: dict[str, Any] = {
        "history_days": settings.history_days,
        "false_alerts_per_day": settings.live_false_alerts_per_day,
        "tail": settings.live_tail,
    }
    values.update(overrides)
    return Options(**values)


def scored_window(
    warehouse: str,
    first: datetime,
    newest: datetime,
    bucket_minutes: int,
    keys: list[tuple[str, str]],
    opts: Options,
) -> tuple[LiveGrid, HourlyHistory, Scores] | None:
    """The live buckets of `keys` from `first` to `newest`, the past they are scored against
    (back to `history_days` + 1 days before `first`) and their scores; None without buckets."""
    grid = load_grid(warehouse, first, newest, bucket_minutes, keys)
    if grid is None:
        return None
    history = load_history(
        warehouse,
        first - timedelta(days=opts.history_days + 1),
        newest,
        keys,
        grid,
        fragments=opts.tail == "fragments",
    )
    return grid, history, score(grid, history, opts)


def check_live(
    warehouse: str,
    settings: Settings,
    latest_event: datetime,
    *,
    bucket_minutes: int | None = None,
    alert: bool = True,
    sinks: Sequence[str] | None = None,
    stream: TextIO | None = None,
    opts: Options | None = None,
    keys: list[tuple[str, str]] | None = None,
) -> LiveCheck:
    """Score the open window up to the newest complete bucket, record the live incidents and
    (with `alert`) deliver their openings and resolutions. Safe to call again at any time."""
    opts = opts or options(settings)
    bucket_minutes = bucket_minutes or settings.live_bucket_minutes
    newest = newest_complete(latest_event, bucket_minutes)
    first = newest - LOOKBACK
    keys = keys or segment_keys(warehouse, settings.min_views)
    if not keys:
        return LiveCheck(as_of=None)
    window = scored_window(warehouse, first, newest, bucket_minutes, keys, opts)
    if window is None:
        return LiveCheck(as_of=None)
    grid, _, scores = window
    incidents = track(grid, scores, opts)
    result = LiveCheck(
        as_of=_utc(grid.starts[-1]) + timedelta(minutes=bucket_minutes),
        segments=len(keys),
        incidents=incidents,
    )
    groups = group_live(warehouse, incidents, result.as_of)  # records the lasting incidents
    write_incidents(warehouse, incidents)
    if alert and incidents:
        result.delivery = deliver(
            warehouse, settings, incidents, sinks=sinks, stream=stream, groups=groups
        )
    log.info(
        "live check as of %s: %d segments, %d incidents (%d open)",
        result.as_of,
        len(keys),
        len(incidents),
        len(result.open),
    )
    return result


def write_incidents(warehouse: str, incidents: Sequence[LiveIncident]) -> None:
    """Replace the `live_incidents` table with the incidents of the last day (a few rows)."""
    now = datetime.now(UTC)
    rows = [{**asdict(i), "drivers": json.dumps(i.drivers), "updated_at": now} for i in incidents]
    tables.write(
        tables.table_path(warehouse, tables.LIVE_INCIDENTS),
        pa.Table.from_pylist(rows, schema=INCIDENT_SCHEMA),
    )


def read_incidents(warehouse: str) -> pa.Table:
    path = tables.table_path(warehouse, tables.LIVE_INCIDENTS)
    return tables.read(path) if tables.exists(path) else INCIDENT_SCHEMA.empty_table()
