"""How the dashboard names and formats things: human labels, numbers, time axes, legend order.

Pure functions (no Streamlit, no Plotly import), so they have fast tests of their own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from ..contract import BAND_LABELS

# Every column a page can show, as people say it. A column not listed gets its words spaced out.
LABELS = {
    "date": "Date",
    "hour": "Hour (UTC)",
    "window_start": "Hour (UTC)",
    "window_end": "Until (UTC)",
    "segment": "Segment",
    "brand": "Brand",
    "category_root": "Category",
    "price_band": "Price band",
    "views": "Views",
    "carts": "Carts",
    "purchases": "Purchases",
    "revenue": "Revenue",
    "avg_order_value": "Average order value",
    "view_to_cart_rate": "View → cart",
    "cart_to_purchase_rate": "Cart → purchase",
    "conversion_rate": "View → purchase",
    "sessions": "Sessions",
    "carted": "Carted",
    "purchased": "Purchased",
    "cart_abandonment_rate": "Cart abandonment",
    "median_seconds_to_cart": "Median time to cart",
    "p90_seconds_to_cart": "90th percentile time to cart",
    "median_seconds_cart_to_purchase": "Median cart → purchase time",
    "p90_seconds_cart_to_purchase": "90th percentile cart → purchase time",
    "events_without_session": "Events without a session",
    "events_without_user": "Events without a user",
    "dimension": "Dimension",
    "step": "Step",
    "type": "Kind",
    "severity": "Severity",
    "window_hours": "Window (hours)",
    "numerator": "Observed count",
    "denominator": "Out of",
    "observed_rate": "Observed",
    "expected_rate": "Expected",
    "z": "z-score",
    "lost_purchases": "Lost purchases",
    "lost_revenue": "Lost revenue",
    "anomaly_id": "Id",
    "incident_id": "Incident",
    "observed": "Observed",
    "expected": "Expected",
}
# Steps and kinds of anomalies and incidents, in words.
STEP_WORDS = {
    "traffic": "traffic",
    "conversion": "view → purchase",
    "view_to_cart": "view → cart",
    "cart_to_purchase": "cart → purchase",
    "cart": "carts",
    "purchase": "purchases",
    "purchases": "purchases",
    "session_view_to_cart": "sessions view → cart",
    "session_cart_to_purchase": "sessions cart → purchase",
    "no_data": "no data",
}
KIND_WORDS = {
    "drop": "drop",
    "spike": "rise",
    "traffic_drop": "traffic drop",
    "traffic_spike": "traffic spike",
}
DIMENSION_WORDS = {"shop": "Shop", "brand": "Brand", "price_band": "Price band",
                   "category_root": "Category"}  # fmt: skip
# Distinct colours, colour-blind safe (Okabe-Ito), in legend order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442",
           "#000000")  # fmt: skip
SEVERITY_COLOURS = {"low": "#9ecae1", "medium": "#fdae6b", "high": "#e6550d",
                    "critical": "#a50f15"}  # fmt: skip
SEVERITY_ORDER = ("critical", "high", "medium", "low")
HOURLY_MAX_DAYS = 3  # ranges this short are drawn per hour: an incident day needs its hours


def label(column: str) -> str:
    """A column's human name: `conversion_rate` -> "View → purchase"."""
    if column in LABELS:
        return LABELS[column]
    words = column.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def band_label(band: str) -> str:
    """`60_plus` -> `60+` (the table keeps its name; people read the sign)."""
    return band.replace("_plus", "+")


def band_order() -> list[str]:
    """The price bands as people read them, cheapest first."""
    return [band_label(b) for b in BAND_LABELS]


def segment_text(root: str) -> str:
    """`brand:acme` -> "Brand acme", `shop:all` -> "Whole shop"."""
    dimension, _, value = root.partition(":")
    if dimension == "shop":
        return "Whole shop"
    if dimension == "price_band":
        value = band_label(value)
    return f"{DIMENSION_WORDS.get(dimension, dimension)} {value}"


def what_text(step: str, kind: str) -> str:
    """An incident's step and kind in words: ("purchase", "drop") -> "purchases drop"."""
    kind_words = KIND_WORDS.get(kind, kind.replace("_", " "))
    if kind_words.startswith("traffic"):
        return kind_words
    return f"{STEP_WORDS.get(step, step.replace('_', ' '))} {kind_words}"


def count(value: float | None) -> str:
    """A count with thousands separators: 1408193 -> "1,408,193"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{round(value):,}"


def money(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.2f}"


def pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * 100:.{digits}f}%"


def short(value: float | None, money_digits: bool = False) -> str:
    """A number short enough for a KPI card: 1,408,193 -> "1.41M"; below a million it is written
    in full ("948,210"), so the card never cuts it off. The full value goes in the card's help."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    size = abs(value)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if size >= limit:
            return f"{value / limit:,.2f}{suffix}"
    return money(value) if money_digits else count(value)


def duration(seconds: float | None) -> str:
    """Seconds in the largest units that keep it readable: 4500 -> "1 h 15 min"."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "n/a"
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def grain(start: date, end: date) -> str:
    """`hour` for ranges up to HOURLY_MAX_DAYS days, else `day`."""
    return "hour" if (end - start).days + 1 <= HOURLY_MAX_DAYS else "day"


def _utc(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def time_axis(start: date, end: date, kind: str | None = None) -> dict[str, Any]:
    """A Plotly x axis for the dates start..end: ticks on whole days (or hours), each labelled
    with its own date, and the range the chosen dates cover, not more."""
    kind = kind or grain(start, end)
    days = (end - start).days + 1
    if kind == "hour":
        step_h = next(h for h in (1, 2, 3, 6, 12, 24) if days * 24 / h <= 8)
        return {
            "type": "date",
            "range": [_utc(start), _utc(end + timedelta(days=1))],
            "tick0": _utc(start),
            "dtick": step_h * 3_600_000,
            "tickformat": "%H:%M<br>%b %d",
            "tickangle": 0,
            "hoverformat": "%b %d %H:%M UTC",
            "title": {"text": "Hour (UTC)"},
        }
    step_d = next(d for d in (1, 2, 7, 14, 28, 56, 91, 182, 364) if days / d <= 10)
    return {
        "type": "date",
        # half a day either side: a day's point or bar sits on its own tick, inside the plot
        "range": [_utc(start) - timedelta(hours=12), _utc(end) + timedelta(hours=12)],
        "tick0": _utc(start),
        "dtick": step_d * 86_400_000,
        "tickformat": "%b %d<br>%Y" if days > 180 else "%b %d",
        "tickangle": 0,
        "hoverformat": "%b %d, %Y",
        "title": {"text": "Date (UTC)"},
    }


def value_axis(values: Iterable[float | None], rate: bool = False, title: str = "") -> dict:
    """A y axis from zero to a little over the largest value: never below zero (no −50%
    conversion), never past 100% for a rate unless the data is."""
    seen = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    top = max(seen, default=0.0)
    if top <= 0:
        top = 1.0
    high = top * 1.12
    if rate and top <= 1:
        high = min(high, 1.0)
    axis: dict[str, Any] = {"range": [0, high], "title": {"text": title}, "tickmode": "auto",
                            "nticks": 6}  # fmt: skip
    axis["tickformat"] = ".0%" if rate and top > 0.1 else ".1%" if rate else "~s" if top >= 10_000 else ",.0f"
    return axis


def log_axis(title: str) -> dict[str, Any]:
    """A log axis with a tick at each power of ten, written 10, 100, 1k, 10k."""
    return {"type": "log", "dtick": 1, "tickformat": "~s", "title": {"text": title}}


def ordered_colours(names: Sequence[str]) -> dict[str, str]:
    """One distinct colour per name, in the given order."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def unit_words(by_user: bool, same_product: bool) -> tuple[str, str]:
    """What a funnel counts (singular, plural): sessions, users, or (user, product) pairs."""
    who = "user" if by_user else "session"
    if same_product:
        return f"{who}-product pair", f"{who}-product pairs"
    return who, f"{who}s"


_WINDOW = re.compile(r"\s*(\d+)\s*([smhd])\s*")


def window_problem(text: str) -> str | None:
    """The web's own wording when the conversion window box holds no duration, else None."""
    match = _WINDOW.fullmatch(text or "")
    if match and int(match.group(1)) > 0:
        return None
    return (
        f"The conversion window \"{text}\" is not a duration. Type a whole number followed by "
        "s, m, h or d, such as 30m, 2h or 7d."
    )


def previous_note(days: int, start: date, before_has_data: bool) -> str:
    """What the KPI changes compare against, and why there are none."""
    span = "day" if days == 1 else f"{days} days"
    if before_has_data:
        return f"Changes are against the previous {span}"
    first = start - timedelta(days=days)
    return (
        f"No change shown: the warehouse has no data in the previous {span} "
        f"({first} to {start - timedelta(days=1)})"
    )


def newest_alerts(rows: list[dict[str, Any]], limit: int = 20) -> list[dict[str, Any]]:
    """One row per alert, however many sinks it went to: its sinks and each one's status,
    newest first (the alerts table has one row per alert and sink)."""
    grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["recorded_at"]):
        key = (r["incident_id"], r.get("message"))
        one = grouped.setdefault(key, {**r, "sinks": {}})
        one["sinks"][r["sink"]] = r["status"]
        one["recorded_at"] = max(one["recorded_at"], r["recorded_at"])
    out = sorted(grouped.values(), key=lambda r: r["recorded_at"], reverse=True)[:limit]
    for r in out:
        r["sent_to"] = ", ".join(
            name if status == "sent" else f"{name} ({status})"
            for name, status in sorted(r.pop("sinks").items())
        )
    return out


_RATE_WORDS = {
    # step: (what the numerator is, what the denominator is)
    "conversion": ("purchases", "views"),
    "view_to_cart": ("carts", "views"),
    "cart_to_purchase": ("purchases", "carts"),
    "session_conversion": ("sessions bought", "sessions"),
    "session_view_to_cart": ("sessions carted", "sessions"),
    "session_cart_to_purchase": ("sessions bought", "sessions that carted"),
}


def why_text(anomaly: dict[str, Any]) -> str:
    """Why a firing fired, in plain words: "3 purchases from 35 carts in the 4 hours from
    Oct 21 10:00 UTC, 16 expected"."""
    hours = int(anomaly.get("window_hours") or 1)
    start = anomaly["window_start"]
    when = (
        f"in the hour from {start:%b %d %H:%M} UTC"
        if hours == 1
        else f"in the {hours} hours from {start:%b %d %H:%M} UTC"
    )
    observed = anomaly.get("numerator")
    if anomaly["step"] == "traffic" or anomaly.get("denominator") is None:
        expected = anomaly.get("expected_rate") or 0.0
        seen = observed if observed is not None else anomaly.get("observed_rate") or 0
        return f"{count(seen)} views {when}, {count(expected)} expected"
    top, bottom = _RATE_WORDS.get(anomaly["step"], ("successes", "tries"))
    trials = anomaly["denominator"] or 0
    expected = (anomaly.get("expected_rate") or 0.0) * trials
    return (
        f"{count(observed)} {top} from {count(trials)} {bottom} {when}, "
        f"{count(expected)} expected ({pct(anomaly.get('observed_rate'))} against "
        f"{pct(anomaly.get('expected_rate'))})"
    )


def drivers_text(drivers: Iterable[dict[str, Any]], limit: int = 3) -> str:
    """The segments that explain an incident: "Price band <10 (68%), Brand ando (10%)"."""
    return ", ".join(
        f"{segment_text(x['segment'])} ({x['share']:.0%})" for x in list(drivers)[:limit]
    )


def breakdown_rows(by: str, parts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A root-cause breakdown as a readable table: segment, share of the change, change."""
    name = label(by)
    out = []
    for p in parts:
        value = band_label(str(p["segment"])) if by == "price_band" else str(p["segment"])
        out.append(
            {
                name: value,
                "Share of the change": pct(p.get("share"), 0),
                "Explained by": {"volume": "traffic", "rate": "its rate"}.get(
                    p.get("kind", ""), p.get("kind", "")
                ),
                "Change": f"{p['change']:+,.1f}" if p.get("change") is not None else "",
            }
        )
    return out


_RAW_WORDS = {
    "session_view_to_cart": "sessions view → cart",
    "session_cart_to_purchase": "sessions cart → purchase",
    "session_conversion": "sessions view → purchase",
    "view_to_cart_rate": "view → cart",
    "cart_to_purchase_rate": "cart → purchase",
    "conversion_rate": "view → purchase",
    "view_to_cart": "view → cart",
    "cart_to_purchase": "cart → purchase",
    "traffic_spike": "traffic spike",
    "traffic_drop": "traffic drop",
    "category_root": "category",
    "price_band": "price band",
    "60_plus": "60+",
}
_RAW = re.compile("|".join(re.escape(k) for k in sorted(_RAW_WORDS, key=len, reverse=True)))


def humanise(text: str) -> str:
    """Words the detector writes for machines (`price_band 60_plus`, `view_to_cart`) as people
    read them (`price band 60+`, `view → cart`), in summaries and alert messages."""
    return _RAW.sub(lambda m: _RAW_WORDS[m.group(0)], text)
