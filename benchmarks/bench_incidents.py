"""Notifications per real event: how many alerts `detect --alert` opens per labelled incident,
with firings grouped into one incident per cause (now) and one incident per segment (before),
and the recall of each, on warehouses built from `funnelpulse generate --inject auto:N`.

Each folder holds a warehouse (`warehouse/`) and its labels (`ev.csv.labels.json`), e.g. made by

    funnelpulse generate --rows 2000000 --days 21 --out ev.csv --seed 101 --inject auto:8
    funnelpulse ingest ev.csv && funnelpulse build

The anomalies are scored once per folder (the seasonal method, not written); both groupings
see the same firings, and notifications follow alerting's own rules (min_severity, cool-down).

Usage: python benchmarks/bench_incidents.py FOLDER [FOLDER ...]
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from funnelpulse import load_settings
from funnelpulse.anomaly.detect import detect
from funnelpulse.anomaly.incidents import (
    Detected,
    evaluate,
    group_incidents,
    notified,
)
from funnelpulse.labels import load_labels


def per_segment(rows: list[dict[str, Any]]) -> list[Detected]:
    """The grouping before: touching windows of one segment, each segment its own incident."""
    out: list[Detected] = []
    by_segment: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_segment.setdefault((r["dimension"], r["segment"]), []).append(r)
    for segment_rows in by_segment.values():
        segment_rows.sort(key=lambda r: r["window_start"])
        run: list[dict[str, Any]] = []
        for r in segment_rows:
            if run and r["window_start"] > max(x["window_end"] for x in run):
                out.extend(group_incidents([_plain(x) for x in run]))
                run = []
            run.append(r)
        if run:
            out.extend(group_incidents([_plain(x) for x in run]))
    return out


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A firing without its evidence span: its whole window, as alerts saw it before."""
    return {k: v for k, v in row.items() if k not in ("evidence_start", "evidence_end")}


def main(folders: list[str]) -> None:
    print(
        f"{'folder':<12} {'labels':>6} {'grouping':<12} {'incidents':>9} {'recall(det)':>11} "
        f"{'precision':>9} {'notices/label':>13} {'outage notices':>14} {'extent err h':>12}"
    )
    for folder in folders:
        settings = load_settings(warehouse=str(Path(folder) / "warehouse"))
        labels = load_labels(Path(folder) / "ev.csv.labels.json")
        found = detect(settings.warehouse, settings, "seasonal", None, write=False)
        scored = max(found.hours - 24 * 3, 0)
        for name, incidents in (
            ("per segment", per_segment(found.rows)),
            ("per cause", found.incidents),
        ):
            notices = notified(incidents, settings.min_severity, settings.cooldown_h)
            s = evaluate(name, incidents, labels, scored, notices)
            outage = s.per_kind.get("outage", {})
            per_outage = (
                f"{outage['notifications'] / outage['found']:.1f}" if outage.get("found") else "n/a"
            )
            print(
                f"{Path(folder).name:<12} {s.labels:>6} {name:<12} {s.predicted:>9} "
                f"{s.recall_detectable:>11.2f} {s.precision:>9.2f} "
                f"{s.notifications_per_label or 0:>13.2f} {per_outage:>14} "
                f"{_extent_error(incidents, labels):>12.1f}"
            )


def _extent_error(incidents: list[Detected], labels: list[Any]) -> float:
    """Median over found labels of |start error| + |end error| (hours) of the incident that
    covers the label's segment (the shop's for shop labels)."""
    errors = []
    for label in labels:
        hits = [
            i
            for i in incidents
            if i.start < label.end + timedelta(hours=1)
            and i.end > label.start
            and (i.dimension, i.segment) in ((label.dimension, label.segment), ("shop", "all"))
        ]
        if hits:
            best = min(hits, key=lambda i: abs(i.start - label.start))
            err = abs(best.start - label.start) + abs(best.end - label.end)
            errors.append(err / timedelta(hours=1))
    errors.sort()
    return errors[len(errors) // 2] if errors else float("nan")


if __name__ == "__main__":
    main(sys.argv[1:])
