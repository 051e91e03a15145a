"""What a person reads: the summary after a build (table sizes, date range, the funnel and its
segments) and the text every command prints, rendered from the library's typed results."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import queries, tables

if TYPE_CHECKING:
    from .anomaly.incidents import Score
    from .engines.base import BuildResult
    from .generate import Generated
    from .ingest import IngestResult
    from .streaming.replay import ReplayResult
    from .streaming.windows import StreamResult


def table_rows(warehouse: str) -> dict[str, int]:
    """Row count of every table that exists (from file metadata, no scan)."""
    snap = queries.Snapshot(warehouse)
    return {name: snap.dataset(name).count_rows() for name in snap.names(tables.ALL_TABLES)}


def summary(
    warehouse: str, top: int = 5, since: date | None = None, until: date | None = None
) -> dict[str, Any]:
    """Everything `funnelpulse report` prints, as plain data (JSON-ready): read through
    `queries.report`, the one code path the HTTP API and the dashboard also use."""
    data: dict[str, Any] = queries.report(warehouse, top, since, until).data
    return data


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def plain(value: object) -> str:
    """A data value (brand, category) safe on a terminal: control characters (escape sequences,
    carriage returns) become spaces, so a name can never move the cursor or recolour the screen."""
    return _CONTROL.sub(" ", str(value))


def finding(step: str, kind: str) -> str:
    """`traffic` + `traffic_drop` -> `traffic drop`; `cart_to_purchase` + `drop` -> `cart_to_purchase drop`."""
    return f"{step} {kind.removeprefix(step + '_')}"


def _hours(count: int) -> str:
    return f"{count} h" if count < 48 or count % 24 else f"{count // 24} d"


def _end(row: dict[str, Any]) -> Any:
    """The end of an anomaly's window (its start plus its hours when the row has no end)."""
    from datetime import timedelta

    return row.get("window_end") or row["window_start"] + timedelta(
        hours=row.get("window_hours") or 1
    )


def _runs(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Anomalies of one segment, step and kind whose windows overlap or touch, as one run: one
    outage scored in several windows (1 h, 3 h, 24 h ...) is one line, not ten."""
    runs: list[list[dict[str, Any]]] = []
    keyed = sorted(
        rows, key=lambda r: (r["dimension"], r["segment"], r["step"], r["type"], r["window_start"])
    )
    end = None
    for row in keyed:
        key = (row["dimension"], row["segment"], row["step"], row["type"])
        row_end = _end(row)
        if runs and end is not None and key == _key(runs[-1][0]) and row["window_start"] <= end:
            runs[-1].append(row)
            end = max(end, row_end)
        else:
            runs.append([row])
            end = row_end
    return runs


def _key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (row["dimension"], row["segment"], row["step"], row["type"])


def _observed(row: dict[str, Any]) -> str:
    """The evidence of one anomaly: view counts as integers, rates as percentages, window named."""
    hours = row.get("window_hours") or 1
    if row["step"] == "traffic":
        return (
            f"{row['observed_rate']:,.0f} views vs {row['expected_rate']:,.0f} expected "
            f"in {_hours(hours)}"
        )
    counts = (
        f" ({row['numerator']:,} of {row['denominator']:,})"
        if row.get("numerator") is not None and row.get("denominator")
        else ""
    )
    return (
        f"{row['observed_rate'] * 100:.1f}%{counts} vs {row['expected_rate'] * 100:.1f}% "
        f"expected in {_hours(hours)}"
    )


def format_detect(rows: list[dict[str, Any]], method: str, segments: int, hours: int) -> str:
    """What `funnelpulse detect` prints: the count, then the ten strongest findings, one line
    per segment, step and kind over a span of hours (its strongest window's evidence)."""
    runs = _runs(rows)
    lines = [
        f"{len(rows):,} anomalies ({method}) over {segments} segments x {hours:,} hours"
        + (f", {len(runs):,} distinct findings" if rows else "")
    ]
    if not runs:
        return "\n".join(lines)
    strongest = sorted(runs, key=lambda run: -max(abs(r["z"]) for r in run))[:10]
    shown = []
    for run in strongest:
        top = max(run, key=lambda r: abs(r["z"]))
        first = min(r["window_start"] for r in run)
        last = max(_end(r) for r in run)
        span = round((last - first).total_seconds() / 3600)
        shown.append(
            (
                top["anomaly_id"],
                f"{first:%Y-%m-%d %H:%M}",
                _hours(span),
                top["severity"],
                f"{top['dimension']}:{plain(top['segment'])}",
                finding(top["step"], top["type"]),
                f"{_observed(top)} (z {top['z']:+.1f})",
            )
        )
    head = ("id", "from (UTC)", "for", "severity", "segment", "finding", "strongest window")
    widths = [max(len(head[i]), *(len(r[i]) for r in shown)) for i in range(6)]
    lines.append(f"Strongest {len(shown)} (details: `funnelpulse explain ID`):")
    for cells in (head, *shown):
        padded = [
            cell.rjust(width) if i == 2 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells[:6], widths, strict=True))
        ]
        lines.append("  " + "  ".join([*padded, cells[6]]))
    return "\n".join(line.rstrip() for line in lines)


def format_explain(row: dict[str, Any]) -> str:
    """What `funnelpulse explain ID` prints: the anomaly and the segments that drove it."""
    hours = row.get("window_hours") or 1
    lines = [
        f"{row['anomaly_id']}: {row['dimension']}:{plain(row['segment'])}, "
        f"{finding(row['step'], row['type'])}, {_hours(hours)} window "
        f"{row['window_start']:%Y-%m-%d %H:%M} to {_end(row):%Y-%m-%d %H:%M} UTC, "
        f"severity {row['severity']}, z {row['z']:+.2f}",
        f"observed {_observed(row)}; estimated lost purchases {row['lost_purchases']:,.0f}, "
        f"revenue {row['lost_revenue'] or 0:,.2f}",
    ]
    cause = row["root_cause"] or {}
    parts_all = [
        (by, part) for by, parts in cause.items() if by != "summary" and parts for part in parts
    ]
    width = max([16, *(len(plain(p["segment"])) for _, p in parts_all)])
    for by, parts in cause.items():
        if by == "summary" or not parts:
            continue
        lines.append(f"\nby {by}:")
        for part in parts:
            detail = (
                f"rate {part['observed_rate'] * 100:.1f}% vs {part['expected_rate'] * 100:.1f}% "
                f"expected, share {part['weight'] * 100:.1f}% vs "
                f"{part['expected_weight'] * 100:.1f}%"
                if "observed_rate" in part
                else f"change {part['change']:+,.0f} views"
            )
            lines.append(
                f"  {plain(part['segment']):<{width}} explains {part['share'] * 100:6.1f}%  "
                f"({part['kind']}; {detail})"
            )
    if cause.get("summary"):
        lines.append(f"\n{plain(cause['summary'])}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def format_text(report: dict[str, Any]) -> str:
    """A compact, aligned text rendering of `summary()`."""
    lines = [f"Warehouse: {report['warehouse']}", "", "Tables (rows):"]
    width = max([32, *(len(name) for name in report["tables"])])
    for name, count in report["tables"].items():
        lines.append(f"  {name:<{width}} {count:>12,}")
    if "funnel" not in report:
        lines += ["", "No gold tables yet: run `funnelpulse build`."]
        return "\n".join(lines)
    span = report["date_range"]
    f = report["funnel"]
    chosen = report.get("range")
    dates = f"{span['start']} .. {span['end']}" if span["start"] else "no events"
    if chosen:
        dates += f" (range {chosen['since'] or 'start'} .. {chosen['until'] or 'end'})"
    lines += [
        "",
        f"Dates (UTC): {dates}",
        "",
        "Funnel:",
        f"  views {f['views']:,} -> carts {f['carts']:,} -> purchases {f['purchases']:,}",
        f"  view->cart {_pct(f['view_to_cart_rate'])}   cart->purchase "
        f"{_pct(f['cart_to_purchase_rate'])}   view->purchase {_pct(f['conversion_rate'])}",
        f"  revenue {f['revenue']:,.2f}",
    ]
    for title, key, label in (
        ("Top brands by revenue", "top_brands", "brand"),
        ("Categories by revenue", "categories", "category_root"),
        ("Price bands", "price_bands", "price_band"),
    ):
        lines += ["", f"{title}:"]
        lines.append(
            f"  {'':<16} {'views':>10} {'carts':>10} {'purchases':>10} {'revenue':>14} {'conv':>7}"
        )
        for row in report[key]:
            lines.append(
                f"  {plain(row[label])[:16]:<16} {row['views']:>10,} {row['carts']:>10,} "
                f"{row['purchases']:>10,} {row['revenue']:>14,.2f} {_pct(row['conversion_rate']):>7}"
            )
    if report.get("coverage_gaps"):
        lines += ["", "Coverage gaps (no event at all, shop-wide: never scored, never alerted):"]
        for g in report["coverage_gaps"]:
            lines.append(
                f"  {g['start']:%Y-%m-%d %H:%M} to {g['end']:%Y-%m-%d %H:%M} UTC ({g['hours']:,} h)"
            )
    if report.get("anomalies"):
        lines += [
            "",
            "Anomalies: " + ", ".join(f"{a['severity']} {a['count']}" for a in report["anomalies"]),
        ]
    if report.get("incidents"):
        found = report["incidents"]
        lines += ["", f"Incidents ({len(found):,}, one per real event; newest 10):"]
        for i in found[-10:]:
            lines.append(
                f"  {plain(i['incident_id'])}  {i['severity']:<8} {i['status']:<8} "
                f"{i['started_at']:%Y-%m-%d %H:%M}-{i['ended_at']:%H:%M}  "
                f"{i['segments']:,} segment{'s' if i['segments'] != 1 else ''}"
            )
    return "\n".join(lines)


def format_annotations(rows: list[dict[str, Any]]) -> str:
    """One line per annotation: id, span (UTC), segment, text."""
    if not rows:
        return "No annotations. Add one with funnelpulse annotate --start ... --end ... TEXT"
    return "\n".join(
        f"{r['annotation_id']}  {r['start']:%Y-%m-%d %H:%M} to {r['end']:%Y-%m-%d %H:%M} UTC  "
        f"{plain(r['segment'] or 'shop:all')}  {plain(r['text'])}"
        for r in rows
    )


# --- What the other commands print: pure functions of the library's results, so each command's
# output is tested in process (the CLI only parses flags, calls the library and echoes these).


def format_ingest(result: IngestResult) -> str:
    """One line per file (rows in, rows quarantined and why), then a total when several."""
    lines = []
    for f in result.files:
        reasons = ", ".join(f"{k} {v:,}" for k, v in f.reasons.items())
        lines.append(
            f"{f.path}: {f.bronze_rows:,} rows to bronze_events, {f.quarantined_rows:,} to "
            f"quarantine_events" + (f" ({reasons})" if reasons else "")
        )
    if len(result.files) > 1:
        lines.append(
            f"Total: {result.bronze_rows:,} to bronze_events, {result.quarantined_rows:,} quarantined"
        )
    return "\n".join(lines)


def format_build(result: BuildResult) -> str:
    """The rows of every table the build wrote."""
    if not result.rows:
        return "Nothing to build: no bronze date changed since the last build (--full rebuilds all)"
    return "\n".join(f"{name}: {rows:,} rows" for name, rows in result.rows.items())


def format_demo(ingested: IngestResult, summary: dict[str, Any]) -> str:
    """What `funnelpulse demo` prints: the sample files read, then the report."""
    lines = [
        f"Ingested {Path(f.path).name}: {f.bronze_rows:,} rows, {f.quarantined_rows:,} quarantined"
        for f in ingested.files
    ]
    return "\n".join([*lines, "", format_text(summary)])


def format_evaluate(scores: list[Score]) -> str:
    """A table of each method's scores, then its recall per kind and the detectable labels missed."""
    lines = [
        f"{'method':<10} {'labels':>6} {'found':>5} {'detectable':>10} {'of which found':>14} "
        f"{'incidents':>9} {'precision':>9} {'recall':>6} {'recall(det)':>11} {'F1(det)':>7} "
        f"{'delay p50/p90':>13} {'false/week':>10} {'notices/label':>13}"
    ]
    for s in scores:
        delay = (
            "n/a" if s.median_delay_h is None else f"{s.median_delay_h:.1f}/{s.p90_delay_h:.1f} h"
        )
        lines.append(
            f"{s.method:<10} {s.labels:>6} {s.detected_labels:>5} {s.detectable:>10} "
            f"{s.detected_detectable:>14} {s.predicted:>9} {s.precision:>9.2f} {s.recall:>6.2f} "
            f"{s.recall_detectable:>11.2f} {s.f1:>7.2f} {delay:>13} {s.false_per_week:>10.2f} "
            + (
                f"{'n/a':>13}"
                if s.notifications_per_label is None
                else f"{s.notifications_per_label:>13.2f}"
            )
        )
    for s in scores:
        kinds = ", ".join(
            f"{kind} {k['found']}/{k['labels']} (detectable {k['found_detectable']}/{k['detectable']}"
            f", {k.get('notifications', 0)} notices)"
            for kind, k in sorted(s.per_kind.items())
        )
        lines.append(f"{s.method} per kind: {kinds}")
        missed = [r for r in s.per_label if not r["detected"] and r["detectable"]]
        if missed:
            lines.append(
                f"{s.method} missed detectable: "
                + ", ".join(
                    f"{r['id']} ({r['kind']} {r['segment']}, ideal z {r['ideal_z']:+.1f})"
                    for r in missed
                )
            )
    return "\n".join(lines)


def format_vacuum(found: dict[str, tuple[int, int]], retain_hours: int, dry_run: bool) -> str:
    """Files and megabytes freed (or that would be) per table, then the total."""
    verb = "would delete" if dry_run else "deleted"
    lines = [
        f"{name}: {verb} {files:,} files ({size / 1e6:,.1f} MB)"
        for name, (files, size) in found.items()
    ]
    total = sum(size for _, size in found.values())
    lines.append(
        f"Total: {verb} {total / 1e6:,.1f} MB (kept every version of the last {retain_hours} h)"
    )
    return "\n".join(lines)


def format_generated(result: Generated) -> str:
    """Events written, and where the labels of the injected incidents went."""
    lines = [f"Wrote {result.rows:,} events to {result.out}"]
    if result.labels is not None:
        lines.append(f"Injected {result.incidents} incidents; labels in {result.labels}")
    return "\n".join(lines)


def format_stream(result: StreamResult, warehouse: str, alert: bool) -> str:
    """The stream's totals when it stops (and its alerts with --alert)."""
    late = (
        f"{result.late_rows_dropped:,} late events quarantined (behind the watermark), "
        f"{result.quarantined:,} quarantined in all"
        if result.late_quarantined
        else f"{result.late_rows_dropped:,} late events dropped by the watermark, "
        f"{result.quarantined:,} quarantined"
    )
    lines = [
        f"Stream stopped after {result.seconds:.0f} s: {result.batches} batches, {result.input_rows:,} events in, "
        f"{late}, {result.windows:,} windows in {warehouse}/gold_stream_funnel_hourly_brand"
    ]
    if alert:
        lines.append(f"Alerts: {result.alerts_sent} sent, {result.alerts_failed} failed")
    return "\n".join(lines)


def format_replay(result: ReplayResult) -> str:
    """Events published and the rate, then every row of the given files that was skipped."""
    text = (
        f"Published {result.published:,} events in {result.seconds:.1f} s "
        f"({result.published / max(result.seconds, 1e-9):,.0f}/s), all delivered"
    )
    skipped = result.skipped.summary()
    return text + ("\n" + skipped if skipped else "")


def format_broker(port: int, topic: str, partitions: int) -> str:
    """Where the local broker listens, once it does."""
    return (
        f"Kafka-protocol broker on 127.0.0.1:{port}, topic {topic} ({partitions} partitions). "
        "In-memory: data is gone when it stops. Ctrl-C to stop."
    )


def csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """Rows as CSV with a header (the API's and `funnelpulse sql`'s CSV)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def format_sql(result: Any, fmt: str) -> str:
    """What `funnelpulse sql` prints for one statement: an aligned table, CSV or JSON."""
    import json

    names = [c[0] for c in result.columns]
    records = result.records()
    if fmt == "json":
        return json.dumps(records, indent=2, default=str)
    if fmt == "csv":
        return csv_text(names, records).rstrip("\n")
    if not names:
        return result.tag
    cells = [[plain("NULL" if v is None else v) for v in row] for row in result.rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.append(f"({len(cells):,} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(lines)


def format_live_demo(demo: Any) -> str:
    """What `demo --live` prints at the end: counts, alerts, and where to look next."""
    lines = [
        f"Published {demo.published:,} events of the live day; the stream consumed "
        f"{demo.consumed:,}.",
        f"Alerts ({len(demo.alerts)}) in {demo.alert_file}:",
    ]
    for alert in demo.alerts:
        lines.append(f"  {plain(alert.get('message') or alert.get('incident_id') or alert)}")
    lines.append(
        "The checkout break at 12:00 UTC was alerted."
        if demo.break_alerted
        else "The checkout break at 12:00 UTC was NOT alerted: see the stream's log in "
        f"{Path(demo.alert_file).parent / 'stream.out'}"
    )
    lines.append(f"Explore: funnelpulse --warehouse {demo.warehouse} incidents list")
    return "\n".join(lines)
