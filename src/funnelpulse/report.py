"""The summary a person reads after a build: table sizes, date range, the funnel and its segments."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from . import tables
from .contract import UNKNOWN, band_order_sql, rollup_sql
from .engines.duckdb_conn import connect
from .errors import ConfigError, WarehouseError


def table_rows(warehouse: str) -> dict[str, int]:
    """Row count of every table that exists (from file metadata, no scan)."""
    out = {}
    for name in tables.ALL_TABLES:
        path = tables.table_path(warehouse, name)
        if tables.exists(path):
            out[name] = tables.dataset(path).count_rows()
    return out


def _between(column: str, since: date | None, until: date | None) -> str:
    """A WHERE clause keeping the UTC dates since..until (either end open when None)."""
    parts = [f"{column} >= DATE '{since}'"] if since else []
    parts += [f"{column} <= DATE '{until}'"] if until else []
    return f" WHERE {' AND '.join(parts)}" if parts else ""


def summary(
    warehouse: str, top: int = 5, since: date | None = None, until: date | None = None
) -> dict[str, Any]:
    """Everything `funnelpulse report` prints, as plain data (JSON-ready).

    `since`/`until` keep only those UTC dates (both included) in every figure except the table
    sizes, so the figures equal the dashboard's for the same date range.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"top = {top!r}: give a whole number of at least 1")
    if since and until and since > until:
        raise ConfigError(f"since {since} is after until {until}. Swap them")
    rows = table_rows(warehouse)
    if not rows:
        raise WarehouseError(
            f"No warehouse at {warehouse} (no tables there). Run `funnelpulse ingest FILE...` and "
            "`funnelpulse build` first, or give the right --warehouse"
        )
    result: dict[str, Any] = {"warehouse": warehouse, "tables": rows}
    if since or until:
        result["range"] = {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        }
    if tables.GOLD_DAILY_BRAND not in rows:
        return result
    day = _between("date", since, until)
    con = connect()
    try:
        for name in (
            tables.GOLD_DAILY_BRAND,
            tables.GOLD_DAILY_CATEGORY,
            tables.GOLD_HOURLY_PRICE_BAND,
        ):
            con.register(name, tables.dataset(tables.table_path(warehouse, name)))

        def records(sql: str) -> list[dict[str, Any]]:
            rel = con.sql(sql)
            return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]

        span = records(
            f"SELECT MIN(date) AS start, MAX(date) AS end FROM {tables.GOLD_DAILY_BRAND}{day}"
        )[0]
        result["date_range"] = {k: v.isoformat() if v else None for k, v in span.items()}
        result["funnel"] = records(f"SELECT {rollup_sql(revenue_digits=2)} FROM {tables.GOLD_DAILY_BRAND}{day}")[0]
        result["top_brands"] = records(
            f"""SELECT coalesce(brand, '{UNKNOWN}') AS brand, {rollup_sql(revenue_digits=2)}
            FROM {tables.GOLD_DAILY_BRAND}{day}
            GROUP BY brand ORDER BY revenue DESC, brand LIMIT {top}"""
        )
        result["categories"] = records(
            f"""SELECT coalesce(category_root, '{UNKNOWN}') AS category_root, {rollup_sql(revenue_digits=2)}
            FROM {tables.GOLD_DAILY_CATEGORY}{day} GROUP BY category_root
            ORDER BY revenue DESC, category_root LIMIT {top}"""
        )
        result["price_bands"] = records(
            f"""SELECT price_band, {rollup_sql(revenue_digits=2)}
            FROM {tables.GOLD_HOURLY_PRICE_BAND}{_between("window_date", since, until)}
            GROUP BY price_band
            ORDER BY {band_order_sql("price_band")}"""
        )
        anomalies = tables.table_path(warehouse, tables.ANOMALIES)
        if tables.exists(anomalies):
            con.register("anomalies", tables.dataset(anomalies))
            result["anomalies"] = records(
                f"""SELECT severity, COUNT(*) AS count
                FROM anomalies{_between("window_date", since, until)}
                GROUP BY severity ORDER BY count DESC, severity"""
            )
    finally:
        con.close()
    return result


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def plain(value: object) -> str:
    """A data value (brand, category) safe on a terminal: control characters (escape sequences,
    carriage returns) become spaces, so a name can never move the cursor or recolour the screen."""
    return _CONTROL.sub(" ", str(value))


def format_detect(rows: list[dict[str, Any]], method: str, segments: int, hours: int) -> str:
    """What `funnelpulse detect` prints: the count and the ten strongest anomalies."""
    lines = [f"{len(rows):,} anomalies ({method}) over {segments} segments x {hours:,} hours"]
    for row in sorted(rows, key=lambda r: -abs(r["z"]))[:10]:
        rate = (
            f"{row['observed_rate']:,.0f} vs {row['expected_rate']:,.0f} views"
            if row["step"] == "traffic"
            else f"{row['observed_rate'] * 100:.1f}% vs {row['expected_rate'] * 100:.1f}%"
        )
        lines.append(
            f"  {row['anomaly_id']}  {row['window_start']:%Y-%m-%d %H:%M}  {row['severity']:<8} "
            f"{row['dimension']}={plain(row['segment']):<14} {row['step']} {row['type']}: {rate} "
            f"(z {row['z']:+.1f})"
        )
    return "\n".join(lines)


def format_explain(row: dict[str, Any]) -> str:
    """What `funnelpulse explain ID` prints: the anomaly and the segments that drove it."""
    lines = [
        f"{row['anomaly_id']}: {row['dimension']} {plain(row['segment'])}, {row['step']} "
        f"{row['type']}, {row['window_start']:%Y-%m-%d %H:%M} UTC, severity {row['severity']}, "
        f"z {row['z']:+.2f}",
        f"observed {row['observed_rate']:.4f} vs expected {row['expected_rate']:.4f}; "
        f"estimated lost purchases {row['lost_purchases']:,.1f}, "
        f"revenue {row['lost_revenue'] or 0:,.2f}",
    ]
    cause = row["root_cause"] or {}
    for by, parts in cause.items():
        if by == "summary" or not parts:
            continue
        lines.append(f"\nby {by}:")
        for part in parts:
            detail = (
                f"observed {part['observed_rate']:.3f} vs {part['expected_rate']:.3f}, "
                f"weight {part['weight']:.2f} vs {part['expected_weight']:.2f}"
                if "observed_rate" in part
                else f"change {part['change']:+,.0f} views"
            )
            lines.append(
                f"  {plain(part['segment']):<16} explains {part['share'] * 100:6.1f}%  "
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
    for name, count in report["tables"].items():
        lines.append(f"  {name:<32} {count:>12,}")
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
    if report.get("anomalies"):
        lines += [
            "",
            "Anomalies: " + ", ".join(f"{a['severity']} {a['count']}" for a in report["anomalies"]),
        ]
    return "\n".join(lines)
