"""Incidents: runs of consecutive anomalous hours of one segment; and known incidents for evaluation."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
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
    """Anomalous hours of one segment grouped into one incident."""

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


def group_incidents(anomalies: list[dict[str, Any]]) -> list[Detected]:
    """Touching or overlapping windows (any step) of the same segment form one incident."""
    by_segment: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in anomalies:
        by_segment.setdefault((a["dimension"], a["segment"]), []).append(a)
    incidents: list[Detected] = []
    for (dimension, segment), rows in by_segment.items():
        rows.sort(key=lambda r: r["window_start"])
        run: list[dict[str, Any]] = []
        run_end = None
        for row in rows:
            if run and run_end is not None and row["window_start"] > run_end:
                incidents.append(_incident(dimension, segment, run))
                run = []
            run.append(row)
            run_end = max(r["window_end"] for r in run)
        if run:
            incidents.append(_incident(dimension, segment, run))
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


def _incident(dimension: str, segment: str, run: list[dict[str, Any]]) -> Detected:
    worst = max(run, key=lambda r: abs(r["z"]))
    start = run[0]["window_start"]
    return Detected(
        incident_id=f"{dimension}:{segment}:{start.strftime('%Y%m%dT%H')}",
        dimension=dimension,
        segment=segment,
        start=start,
        end=max(r["window_end"] for r in run),
        steps=sorted({r["step"] for r in run}),
        types=sorted({r["type"] for r in run}),
        severity=max((r["severity"] for r in run), key=lambda s: SEVERITY_RANK[s]),
        worst_z=float(worst["z"]),
        lost_purchases=incident_loss(run, "lost_purchases"),
        lost_revenue=incident_loss(run, "lost_revenue"),
        anomaly_ids=[r["anomaly_id"] for r in run],
        first_hour=min(r["window_end"] for r in run) - timedelta(hours=1),
    )


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


def _related(pred: Detected, label: Incident) -> bool:
    """A prediction explains a label when it overlaps in time and is not a different segment of the same dimension."""
    overlaps = pred.start < label.end + timedelta(hours=1) and pred.end > label.start
    same_dim_other = pred.dimension == label.dimension and pred.segment != label.segment
    return overlaps and not same_dim_other


def is_detectable(label: Incident) -> bool:
    return label.ideal_z is not None and abs(label.ideal_z) >= DETECTABLE_Z


def evaluate(
    method: str, predicted: list[Detected], labels: list[Incident], scored_hours: int = 0
) -> Score:
    """Recall over all and over detectable labels, precision, delays and false incidents per week.

    A label is found when a predicted incident overlaps it (see `_related`); its delay is the
    hour whose data first fired minus the label's first hour. A prediction related to no label
    is a false incident; `scored_hours` (hours with enough history to score) turns their count
    into a weekly rate.
    """
    per_label: list[dict[str, Any]] = []
    delays = []
    for label in labels:
        hits = [p for p in predicted if _related(p, label)]
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
            r["kind"], {"labels": 0, "found": 0, "detectable": 0, "found_detectable": 0}
        )
        k["labels"] += 1
        k["found"] += int(r["detected"])
        k["detectable"] += int(r["detectable"])
        k["found_detectable"] += int(r["detected"] and r["detectable"])
    weeks = max(scored_hours, 1) / 168
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
    )
