"""The daily digest: one day's funnel against the same weekday a week before, the incidents
opened and resolved that day, and the brands that moved most, as plain text and as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow.compute as pc

from .. import tables
from ..config import Settings
from ..errors import WarehouseError
from .alertlog import AlertLog
from .incident_book import incident_book, send_one
from .incidents import Detected
from .sinks import plain

COUNTS = ("views", "carts", "purchases", "revenue")
TOP_MOVERS = 5


@dataclass
class Digest:
    date: str
    compared_with: str
    funnel: dict[str, dict[str, float]]  # day | week_before -> counts and conversion
    change_pct: dict[str, float | None]
    opened: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    movers: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _totals(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {name: float(sum(r[name] or 0 for r in rows)) for name in COUNTS}
    out["conversion_rate"] = out["purchases"] / out["views"] if out["views"] else 0.0
    return out


def _pct(now: float, before: float) -> float | None:
    return round((now - before) / before * 100, 1) if before else None


def build_digest(warehouse: str, settings: Settings, day: date | None = None) -> Digest:
    """The digest of `day` (default: the newest day with data, yesterday in a running shop)."""
    path = tables.table_path(warehouse, tables.GOLD_DAILY_BRAND)
    if not tables.exists(path):
        raise WarehouseError(f"No daily funnel in {warehouse}. Run `funnelpulse build` first")
    table = tables.read(path)
    dates = table.column("date")
    if day is None:
        newest = pc.max(dates).as_py()
        if newest is None:
            raise WarehouseError(f"The daily funnel in {warehouse} is empty. Ingest data first")
        day = newest
    before = day - timedelta(days=7)
    now_rows = table.filter(pc.equal(dates, day)).to_pylist()
    if not now_rows:
        raise WarehouseError(
            f"No data for {day}. Pick a date with data (--date YYYY-MM-DD) or ingest that day"
        )
    old_rows = table.filter(pc.equal(dates, before)).to_pylist()
    now, old = _totals(now_rows), _totals(old_rows)
    movers: list[dict[str, Any]] = []
    old_by = {r["brand"]: r for r in old_rows}
    for r in now_rows:
        was = old_by.get(r["brand"], {})
        delta = float(r["revenue"] or 0) - float(was.get("revenue") or 0)
        movers.append(
            {
                "segment": f"brand:{r['brand']}",
                "revenue": round(float(r["revenue"] or 0), 2),
                "revenue_week_before": round(float(was.get("revenue") or 0), 2),
                "revenue_change": round(delta, 2),
                "purchases": int(r["purchases"] or 0),
                "purchases_week_before": int(was.get("purchases") or 0),
            }
        )
    movers.sort(key=lambda m: -abs(m["revenue_change"]))
    digest = Digest(
        date=day.isoformat(),
        compared_with=before.isoformat(),
        funnel={"day": now, "week_before": old},
        change_pct={k: _pct(now[k], old[k]) for k in (*COUNTS, "conversion_rate")},
        movers=movers[:TOP_MOVERS],
    )
    for view in incident_book(warehouse, settings):
        i = view.incident
        item = {
            "id": i.incident_id,
            "segment": f"{i.dimension}:{i.segment}",
            "severity": i.severity,
            "state": view.state,
            "start": i.start.isoformat(),
            "end": i.end.isoformat(),
            "lost_purchases": round(i.lost_purchases, 1),
        }
        if i.start.date() == day:
            digest.opened.append(item)
        if view.state == "resolved" and i.end.date() == day:
            digest.resolved.append(item)
    return digest


def _change(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def format_digest(d: Digest) -> str:
    """Plain text for Slack and e-mail (no markup)."""
    day, old = d.funnel["day"], d.funnel["week_before"]
    lines = [
        f"FunnelPulse daily digest for {d.date} (UTC), against {d.compared_with}",
        f"Views {day['views']:,.0f} ({_change(d.change_pct['views'])}), carts "
        f"{day['carts']:,.0f} ({_change(d.change_pct['carts'])}), purchases "
        f"{day['purchases']:,.0f} ({_change(d.change_pct['purchases'])}), revenue "
        f"{day['revenue']:,.2f} ({_change(d.change_pct['revenue'])}).",
        f"Conversion {day['conversion_rate'] * 100:.2f}% vs "
        f"{old['conversion_rate'] * 100:.2f}% a week before.",
        f"Incidents opened: {len(d.opened)}; resolved: {len(d.resolved)}.",
    ]
    for item in d.opened:
        lines.append(
            f"- opened {plain(item['id'])} ({item['severity']}, now {item['state']}): "
            f"{item['lost_purchases']:,.1f} purchases lost"
        )
    for item in d.resolved:
        lines.append(f"- resolved {plain(item['id'])} at {item['end'][11:16]} UTC")
    if d.movers:
        lines.append("Largest movers (revenue against a week before):")
        for m in d.movers:
            lines.append(
                f"- {plain(m['segment'])}: {m['revenue']:,.2f} vs {m['revenue_week_before']:,.2f} "
                f"({m['revenue_change']:+,.2f})"
            )
    return "\n".join(lines)


def send_digest(
    warehouse: str, settings: Settings, digest: Digest, sinks: list[str]
) -> dict[str, str]:
    """Send the digest's text to each sink once (journalled like alerts under the key of
    `digest:<date>`): sink -> sent | already sent | failed: reason."""
    start = datetime.fromisoformat(digest.date).replace(tzinfo=UTC)
    notice = Detected(
        incident_id=f"digest:{digest.date}",
        dimension="shop",
        segment="all",
        start=start,
        end=start + timedelta(days=1),
        steps=["digest"],
        types=["digest"],
        severity="low",
        worst_z=0.0,
        lost_purchases=sum(i["lost_purchases"] for i in digest.opened),
        lost_revenue=0.0,
        anomaly_ids=[],
    )
    text = format_digest(digest)
    out = {}
    with AlertLog(warehouse) as journal:
        done = {
            r["sink"]
            for r in journal.history()
            if r["incident_id"] == notice.incident_id and r["status"] == "sent"
        }
        for name in sinks:
            if name in done:
                out[name] = "already sent"
                continue
            ok, error = send_one(journal, settings, notice, name, text)
            out[name] = "sent" if ok else f"failed: {error}"
    return out
