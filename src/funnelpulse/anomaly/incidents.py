"""Incidents: runs of consecutive anomalous hours of one segment; and known incidents for evaluation."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import BAND_LABELS
from ..errors import ConfigError, InputError
from ..generate import Incident, ranked_brands
from .scoring import SEVERITY_RANK


@dataclass
class Detected:
    """One incident: the firings of every segment that one cause moved, grouped.

    `dimension`/`segment` is its root (the shop when the shop fired, else the segment that ties
    the others together); `segments` lists every segment that fired, written `dimension:value`.
    """

    incident_id: str
    dimension: str
    segment: str
    start: datetime
    end: datetime
    steps: list[str]
    types: list[str]
    severity: str
    worst_z: float
    lost_purchases: float
    lost_revenue: float
    anomaly_ids: list[str]
    first_hour: datetime | None = None  # the hour whose data first fired (for detection delay)
    segments: list[str] = field(default_factory=list)
    drivers: list[dict[str, Any]] = field(default_factory=list)
    step: str = ""  # the step and kind of the firing that opened it (part of its id)
    kind: str = ""
    root_anomaly_id: str = ""  # the root's most significant firing (what its message shows)
    effects: list[str] = field(default_factory=list)  # see `effects`

    @property
    def root(self) -> str:
        return seg(self.dimension, self.segment)


def seg(dimension: str, segment: str) -> str:
    """A segment as it is written everywhere: `brand:acme`, `price_band:<10`, `shop:all`."""
    return f"{dimension}:{segment}"


def incident_key(root: str, step: str, kind: str, start: datetime) -> str:
    """An incident's id, fixed when it first fires: its root segment, step, kind and first hour."""
    return f"{root}/{step}-{kind}/{start.strftime('%Y%m%dT%H')}"


def evidence_span(
    observed: np.ndarray, expected: np.ndarray, sign: float, min_change: float
) -> tuple[int, int]:
    """The hours of a firing window whose own evidence moved: first and last index (inclusive).

    The run of consecutive hours with the largest total excess in the fired direction, each hour
    counted beyond half the smallest change that alerts; a long window that keeps firing after an
    incident ended therefore still points at the hours of the incident itself.
    """
    obs = np.nan_to_num(np.asarray(observed, dtype=float))
    exp = np.nan_to_num(np.asarray(expected, dtype=float))
    gain = sign * (obs - exp) - 0.5 * min_change * np.abs(exp)
    best, best_span = -np.inf, (0, len(gain) - 1)
    total, first = 0.0, 0
    for i, g in enumerate(gain):
        if total <= 0:
            total, first = 0.0, i
        total += g
        if total > best:
            best, best_span = total, (first, i)
    return best_span if best > 0 else (0, len(gain) - 1)


def _span(row: dict[str, Any]) -> tuple[datetime, datetime]:
    """A firing's own hours: its evidence span when scored with one, else its whole window."""
    return row.get("evidence_start") or row["window_start"], (
        row.get("evidence_end") or row["window_end"]
    )


def _kind(row: dict[str, Any]) -> str:
    return "drop" if str(row["type"]).endswith("drop") else "spike"


# Steps whose trials are views: views that vanish (a tracking outage) lift their rate.
_VIEW_RATES = ("conversion", "view_to_cart", "purchases")


def effects(step: str, kind: str) -> set[str]:
    """What a firing says happened, to tell whether two firings can share a cause."""
    if step == "traffic":
        return {"down", "views_down"} if kind == "drop" else {"up", "views_up"}
    out = {"down"} if kind == "drop" else {"up"}
    if step in _VIEW_RATES:
        out.add("views_up" if kind == "drop" else "views_down")
    return out


@dataclass
class _Run:
    """Touching or overlapping firings (any step) of one segment."""

    dimension: str
    segment: str
    rows: list[dict[str, Any]]
    start: datetime
    end: datetime
    effects: set[str]

    @property
    def worst(self) -> dict[str, Any]:
        return max(self.rows, key=lambda r: abs(r["z"]))


_LEVEL = {"shop": 0, "price_band": 1, "brand": 2}


def _runs(anomalies: list[dict[str, Any]]) -> list[_Run]:
    by_segment: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in anomalies:
        by_segment.setdefault((a["dimension"], a["segment"]), []).append(a)
    runs: list[_Run] = []
    for (dimension, segment), rows in by_segment.items():
        rows.sort(key=lambda r: _span(r)[0])
        run: list[dict[str, Any]] = []
        run_end: datetime | None = None
        for row in rows:
            start, end = _span(row)
            if run and run_end is not None and start > run_end:
                runs.append(_make_run(dimension, segment, run))
                run, run_end = [], None
            run.append(row)
            run_end = end if run_end is None else max(run_end, end)
        if run:
            runs.append(_make_run(dimension, segment, run))
    return runs


def _make_run(dimension: str, segment: str, rows: list[dict[str, Any]]) -> _Run:
    spans = [_span(r) for r in rows]
    return _Run(
        dimension,
        segment,
        rows,
        min(s for s, _ in spans),
        max(e for _, e in spans),
        set().union(*(effects(r["step"], _kind(r)) for r in rows)),
    )


def _named(run: _Run, other: _Run) -> bool | None:
    """Whether `run`'s root cause names `other` among its drivers (None: it has no root cause)."""
    cause = run.worst.get("root_cause")
    if not cause:
        return None
    try:
        parts = json.loads(cause).get(other.dimension) or []
    except (ValueError, AttributeError):
        return None
    return any(p.get("segment") == other.segment and p.get("share", 0) >= 0.1 for p in parts)


def related(a: _Run, b: _Run) -> bool:
    """Two segments' firings share a cause: they overlap in time, say compatible things, and one
    contains the other (the shop contains everything; a brand and a price band are tied when the
    root cause of either names the other)."""
    if not (a.start <= b.end and b.start <= a.end) or not (a.effects & b.effects):
        return False
    if "shop" in (a.dimension, b.dimension):
        return True
    if a.dimension == b.dimension:
        return a.segment == b.segment
    said = [x for x in (_named(a, b), _named(b, a)) if x is not None]
    return any(said) if said else True


def group_incidents(anomalies: list[dict[str, Any]]) -> list[Detected]:
    """One incident per cause: each segment's touching firings form a run, and runs that share a
    cause (see `related`) form one incident whose root is the shop when it fired."""
    runs = _runs(anomalies)
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = sorted(range(len(runs)), key=lambda i: runs[i].start)
    for n, i in enumerate(order):
        for j in order[n + 1 :]:
            if runs[j].start > runs[i].end:
                break
            if related(runs[i], runs[j]):
                parent[find(j)] = find(i)
    groups: dict[int, list[_Run]] = {}
    for i in range(len(runs)):
        groups.setdefault(find(i), []).append(runs[i])
    incidents = [_incident(group) for group in groups.values()]
    return sorted(incidents, key=lambda i: (i.start, i.dimension, i.segment))


def incident_loss(run: list[dict[str, Any]], column: str) -> float:
    """Lost purchases (or revenue) of an incident, counting every step and no purchase twice.

    Each row's loss is spread over the hours of its window; per hour, the traffic loss (fewer
    views) adds to the rate loss, and the rate loss is the largest of `conversion`, its two
    sub-steps `view_to_cart` + `cart_to_purchase`, and the same three counted in sessions: all
    measure the same missing purchases.
    """
    per: dict[tuple[datetime, str], float] = {}
    for r in run:
        hours = max(1, round((r["window_end"] - r["window_start"]) / timedelta(hours=1)))
        share = float(r.get(column) or 0.0) / hours
        for h in range(hours):
            key = (r["window_start"] + timedelta(hours=h), r["step"])
            per[key] = per.get(key, 0.0) + share
    total = 0.0
    for hour in {h for h, _ in per}:
        rate = 0.0
        for prefix in ("", "session_"):
            whole = per.get((hour, f"{prefix}conversion"), 0.0)
            parts = per.get((hour, f"{prefix}view_to_cart"), 0.0) + per.get(
                (hour, f"{prefix}cart_to_purchase"), 0.0
            )
            rate = max(rate, whole, parts, key=abs)
        total += per.get((hour, "traffic"), 0.0) + rate
    return total


def _root(group: list[_Run]) -> _Run:
    """The shop when it fired; else the segment tied to the most others; then the most specific."""
    links = {id(r): sum(related(r, o) for o in group if o is not r) for r in group}
    return min(
        group,
        key=lambda r: (_LEVEL[r.dimension] != 0, -links[id(r)], -_LEVEL[r.dimension], r.start),
    )


def _drivers(root: _Run, group: list[_Run]) -> list[dict[str, Any]]:
    """The segments behind the root, from its root cause (share of the change), largest first."""
    out: list[dict[str, Any]] = []
    cause = root.worst.get("root_cause")
    if cause:
        try:
            parsed = json.loads(cause)
        except ValueError:
            parsed = {}
        for dimension in ("brand", "price_band", "category_root"):
            for part in (parsed.get(dimension) or [])[:3]:
                share = float(part.get("share", 0.0))
                if share >= 0.1:
                    out.append({"segment": seg(dimension, part["segment"]), "share": share})
    if not out:
        out = [
            {"segment": seg(r.dimension, r.segment), "share": None} for r in group if r is not root
        ]
    return sorted(out, key=lambda d: -(d["share"] or 0))[:6]


def _incident(group: list[_Run]) -> Detected:
    # The root's own evidence dates the incident and names it: the other segments' spans are
    # noisier (fewer events), and would stretch it.
    root = _root(group)
    opener = min(root.rows, key=lambda r: (_span(r)[0], -abs(r["z"])))
    rows = [r for run in group for r in run.rows]
    worst = max(rows, key=lambda r: abs(r["z"]))
    step = opener["step"]
    kind = _kind(opener)
    return Detected(
        incident_id=incident_key(root_seg(root), step, kind, root.start),
        dimension=root.dimension,
        segment=root.segment,
        start=root.start,
        end=root.end,
        steps=sorted({r["step"] for r in rows}),
        types=sorted({r["type"] for r in rows}),
        severity=max((r["severity"] for r in rows), key=lambda s: SEVERITY_RANK[s]),
        worst_z=float(worst["z"]),
        lost_purchases=incident_loss(root.rows, "lost_purchases"),
        lost_revenue=incident_loss(root.rows, "lost_revenue"),
        anomaly_ids=[r["anomaly_id"] for r in rows],
        first_hour=min(r["window_end"] for r in rows) - timedelta(hours=1),
        segments=sorted(
            {seg(r.dimension, r.segment) for r in group},
            key=lambda s: (s != root_seg(root), s),
        ),
        drivers=_drivers(root, group),
        step=step,
        kind=kind,
        root_anomaly_id=root.worst["anomaly_id"],
        effects=sorted(set().union(*(r.effects for r in group))),
    )


def root_seg(run: _Run) -> str:
    return seg(run.dimension, run.segment)


# ---- known incidents for the labelled benchmark ------------------------------------------

KINDS = (
    # kind, dimension, step, factor, shortest and longest hours
    ("checkout_broken", "brand", "purchase", 0.0, 1, 8),  # nobody can pay
    ("checkout_partial", "brand", "purchase", 0.2, 1, 8),  # most payments fail
    ("cart_drop", "brand", "cart", 0.3, 1, 8),  # add-to-cart broken for most
    ("spike", "brand", "purchase", 2.2, 1, 8),  # a campaign converts unusually well
    ("outage", "shop", "views", 0.1, 1, 6),  # tracking outage: 90% of views vanish shop-wide
    ("decline", "brand", "purchase", 0.15, 4, 8),  # slow decline towards -85%
)
DETECTABLE_Z = 5.0  # a label is detectable when the ideal test reaches |z| >= 5
SPACING_H = 16  # labels start at least this far apart


def plan_incidents(
    count: int,
    *,
    start: datetime,
    days: int,
    brands: list[str],
    seed: int,
    quiet_days: int = 8,
    top_brands: int = 60,
) -> list[Incident]:
    """Place `count` incidents of every kind after `quiet_days` of clean history, never overlapping.

    Brands are drawn log-uniformly over the `top_brands` busiest, so the head and the tail both
    get incidents; durations are uniform between each kind's shortest and longest.
    """
    rng = np.random.default_rng(seed + 7919)
    free_hours = (days - quiet_days) * 24
    if free_hours < count * SPACING_H:
        need = quiet_days + (count * SPACING_H) // 24 + 2
        raise InputError(
            f"{days} days is too short for {count} incidents; use --days {need} or more"
        )
    slots = np.sort(rng.choice(np.arange(free_hours // SPACING_H), size=count, replace=False))
    kinds = [KINDS[i % len(KINDS)] for i in rng.permutation(count)]
    ranks = min(top_brands, len(brands))
    out = []
    for i, (slot, (kind, dimension, step, factor, shortest, longest)) in enumerate(
        zip(slots * SPACING_H, kinds, strict=True)
    ):
        if dimension == "brand":
            segment = brands[int(np.exp(rng.uniform(0, np.log(ranks)))) - 1]
        elif dimension == "price_band":
            segment = BAND_LABELS[int(rng.integers(0, 2))]
        else:
            segment = "all"
        hour = quiet_days * 24 + int(slot) + int(rng.integers(0, 4))
        out.append(
            Incident(
                id=f"inc{i + 1:02d}",
                kind=kind,
                dimension=dimension,
                segment=segment,
                step=step,
                start=start + timedelta(hours=hour),
                hours=int(rng.integers(shortest, longest + 1)),
                factor=factor,
            )
        )
    return out


class InjectError(ConfigError):
    """An `--inject` value that is neither auto:N (with enough brands) nor a labels file."""


def incidents_to_inject(
    inject: str | None, *, start: datetime, days: int, brands: int, seed: int
) -> list[Incident]:
    """The incidents `generate --inject` asks for: `auto:N` placed at random for this seed, or
    the labels of an earlier run read from a file; none without `inject`."""
    if not inject:
        return []
    if not inject.startswith("auto:"):
        if not Path(inject).is_file():
            raise InjectError(
                f"{inject!r} is neither auto:N nor a labels file (no such file). Use auto:3, or "
                "the .labels.json an earlier generate wrote"
            )
        return load_labels(Path(inject))
    count = int(inject[5:]) if inject[5:].isdigit() else 0
    if count < 1:
        raise InjectError("use auto:N, N a whole number >= 1")
    if brands < 3:
        raise InjectError("incidents need --brands 3 or more")
    return plan_incidents(
        count, start=start, days=days, brands=ranked_brands(brands, seed), seed=seed
    )


def save_labels(incidents: list[Incident], path: Path) -> None:
    rows = [
        {**asdict(i), "start": i.start.isoformat(), "end": i.end.isoformat()} for i in incidents
    ]
    path.write_text(json.dumps(rows, indent=2))


def load_labels(path: Path) -> list[Incident]:
    try:
        rows = json.loads(Path(path).read_text())
        return [
            Incident(
                id=r["id"],
                kind=r["kind"],
                dimension=r["dimension"],
                segment=r["segment"],
                step=r["step"],
                start=datetime.fromisoformat(r["start"]).astimezone(UTC),
                hours=int(r["hours"]),
                factor=float(r["factor"]),
                ideal_z=None if r.get("ideal_z") is None else float(r["ideal_z"]),
            )
            for r in rows
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path}: not a labels file written by `funnelpulse generate --inject` ({exc})"
        ) from exc


@dataclass
class Score:
    method: str
    labels: int
    detectable: int  # labels whose ideal z reaches DETECTABLE_Z
    detected_labels: int
    detected_detectable: int
    predicted: int
    true_predicted: int
    precision: float
    recall: float  # over every label
    recall_detectable: float
    f1: float  # precision with recall over detectable labels
    median_delay_h: float | None
    p90_delay_h: float | None
    false_per_week: float
    per_kind: dict[str, dict[str, int]]
    per_label: list[dict[str, Any]]
    # opening notifications per label found (alerts are opened per incident): the bar is <= 1.2
    notifications_per_label: float | None = None


def _related(pred: Detected, label: Incident) -> bool:
    """A prediction explains a label when it overlaps in time and is not a different segment of the same dimension."""
    overlaps = pred.start < label.end + timedelta(hours=1) and pred.end > label.start
    same_dim_other = pred.dimension == label.dimension and pred.segment != label.segment
    return overlaps and not same_dim_other


def is_detectable(label: Incident) -> bool:
    return label.ideal_z is not None and abs(label.ideal_z) >= DETECTABLE_Z


def notified(
    incidents: list[Detected], min_severity: str = "low", cooldown_h: float = 0
) -> list[Detected]:
    """The incidents `detect --alert` opens a notification for: at or above `min_severity`, and
    not within `cooldown_h` of the previous one announced for the same root segment."""
    floor = SEVERITY_RANK[min_severity]
    last: dict[str, datetime] = {}
    out = []
    for i in sorted(incidents, key=lambda i: i.start):
        if SEVERITY_RANK[i.severity] < floor:
            continue
        recent = last.get(i.root)
        if recent is not None and timedelta(0) < i.start - recent < timedelta(hours=cooldown_h):
            continue
        last[i.root] = i.start
        out.append(i)
    return out


def evaluate(
    method: str,
    predicted: list[Detected],
    labels: list[Incident],
    scored_hours: int = 0,
    notices: list[Detected] | None = None,
) -> Score:
    """Recall over all and over detectable labels, precision, delays and false incidents per week.

    A label is found when a predicted incident overlaps it (see `_related`); its delay is the
    hour whose data first fired minus the label's first hour. A prediction related to no label
    is a false incident; `scored_hours` (hours with enough history to score) turns their count
    into a weekly rate. `notices` (default: every predicted incident) are the notifications
    opened; each label's count of them is its notifications (one real event, one notification).
    """
    notices = predicted if notices is None else notices
    per_label: list[dict[str, Any]] = []
    delays = []
    for label in labels:
        hits = [p for p in predicted if _related(p, label)]
        sent = sum(_related(p, label) for p in notices)
        first = min((p.first_hour or p.start for p in hits), default=None)
        delay = None if first is None else max(0.0, (first - label.start).total_seconds() / 3600)
        if delay is not None:
            delays.append(delay)
        per_label.append(
            {
                "id": label.id,
                "kind": label.kind,
                "segment": f"{label.dimension}:{label.segment}",
                "start": label.start.isoformat(),
                "hours": label.hours,
                "ideal_z": label.ideal_z,
                "detectable": is_detectable(label),
                "detected": first is not None,
                "delay_h": delay,
                "notifications": sent,
            }
        )
    true_pred = sum(any(_related(p, lab) for lab in labels) for p in predicted)
    detected = sum(1 for r in per_label if r["detected"])
    detectable = [r for r in per_label if r["detectable"]]
    found_detectable = sum(1 for r in detectable if r["detected"])
    precision = true_pred / len(predicted) if predicted else 0.0
    recall = detected / len(labels) if labels else 0.0
    recall_d = found_detectable / len(detectable) if detectable else 0.0
    f1 = 2 * precision * recall_d / (precision + recall_d) if precision + recall_d else 0.0
    per_kind: dict[str, dict[str, int]] = {}
    for r in per_label:
        k = per_kind.setdefault(
            r["kind"],
            {"labels": 0, "found": 0, "detectable": 0, "found_detectable": 0, "notifications": 0},
        )
        k["labels"] += 1
        k["notifications"] += r["notifications"] if r["detected"] else 0
        k["found"] += int(r["detected"])
        k["detectable"] += int(r["detectable"])
        k["found_detectable"] += int(r["detected"] and r["detectable"])
    weeks = max(scored_hours, 1) / 168
    found = [r for r in per_label if r["detected"]]
    return Score(
        method=method,
        labels=len(labels),
        detectable=len(detectable),
        detected_labels=detected,
        detected_detectable=found_detectable,
        predicted=len(predicted),
        true_predicted=true_pred,
        precision=precision,
        recall=recall,
        recall_detectable=recall_d,
        f1=f1,
        median_delay_h=statistics.median(delays) if delays else None,
        p90_delay_h=float(np.percentile(delays, 90)) if delays else None,
        false_per_week=(len(predicted) - true_pred) / weeks,
        per_kind=per_kind,
        per_label=per_label,
        notifications_per_label=(
            sum(r["notifications"] for r in found) / len(found) if found else None
        ),
    )
