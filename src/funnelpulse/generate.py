"""Realistic synthetic REES46-format events: sessions that move view -> cart -> purchase.

Vectorised with numpy so 9M rows take seconds. Optional incidents multiply the funnel
probabilities of one segment for a while, which gives labelled data for the detector benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .contract import BAND_BOUNDS, BAND_LABELS
from .errors import InputError

if TYPE_CHECKING:
    from .console import Progress

SYLLABLES = [
    "ka",
    "ri",
    "no",
    "ve",
    "la",
    "mi",
    "su",
    "ta",
    "lo",
    "ne",
    "da",
    "be",
    "ro",
    "zi",
    "pa",
    "gu",
    "me",
    "so",
    "li",
    "an",
    "el",
    "or",
    "is",
    "un",
    "ar",
    "en",
    "ix",
    "ol",
    "ul",
    "ra",
    "te",
    "vo",
    "lu",
    "ki",
    "ma",
    "sa",
    "do",
    "fe",
    "ni",
]
CATEGORY_CODES = (
    "appliances.environment.vacuum",
    "appliances.personal.hair_cutter",
    "furniture.bathroom.bath",
    "furniture.living_room.cabinet",
    "apparel.glove",
    "stationery.cartrige",
    "accessories.bag",
    "accessories.cosmetic_bag",
    "sport.diving",
)
SESSION_INTERACTIONS_MEAN = 2.2
BASE_CART = 0.55
BASE_PURCHASE = 0.30
REMOVE_GIVEN_ABANDON = 0.45
SKIP_VIEW = 0.04
DUPLICATE_SHARE = 0.05
ZERO_PRICE_SHARE = 0.003
NULL_BRAND_SHARE = 0.36
CATEGORY_SHARE = 0.02


@dataclass(frozen=True)
class Incident:
    """A known change injected into generated data: `step` of `segment` is multiplied by `factor`.

    kind: checkout_broken | checkout_partial | cart_drop | spike | outage | decline (older
    labels: drop). step: cart | purchase | traffic | views. dimension: brand | price_band | shop.
    For `decline` the factor is reached linearly at the end. `ideal_z` is how detectable it is:
    the combined z over its hours of an ideal test that knows the true rates (None if unknown).
    """

    id: str
    kind: str
    dimension: str
    segment: str
    step: str
    start: datetime
    hours: int
    factor: float
    ideal_z: float | None = None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)


def _zipf(count: int, exponent: float = 1.0) -> np.ndarray:
    """Traffic shares of `count` brands by rank: the top brand ~ 1/H(count), the 100th ~ 1/100 of it."""
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    return weights / weights.sum()


def brand_names(count: int, rng: np.random.Generator) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        parts = rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))
        names.add("".join(parts))
    return sorted(names)


def price_band(price: np.ndarray) -> np.ndarray:
    """Band index 0..3 for `<10`, `10-30`, `30-60`, `60_plus`, matching the SQL model."""
    return np.searchsorted(np.array(BAND_BOUNDS), price, side="right")




def _uuids(rng: np.random.Generator, count: int) -> pa.Array:
    hexdigits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nibbles = hexdigits[rng.integers(0, 16, size=(count, 32), dtype=np.uint8)]
    out = np.full((count, 36), ord("-"), dtype=np.uint8)
    # 8-4-4-4-12 hex digits: (position in the text, position in the digits, width)
    for dst, src, width in ((0, 0, 8), (9, 8, 4), (14, 12, 4), (19, 16, 4), (24, 20, 12)):
        out[:, dst : dst + width] = nibbles[:, src : src + width]
    return pa.array(out.view("S36").ravel(), type=pa.binary()).cast(pa.string())


def _incident_multipliers(
    incidents: Sequence[Incident],
    t_s: np.ndarray,
    brand: np.ndarray,
    band: np.ndarray,
    brands: list[str],
) -> tuple[dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Per-interaction multipliers of each step, and per incident (hit mask, its factor there)."""
    mult = {step: np.ones(len(t_s)) for step in ("cart", "purchase", "traffic", "views")}
    brand_index = {name: i for i, name in enumerate(brands)}
    hits = []
    for inc in incidents:
        start = inc.start.timestamp()
        end = inc.end.timestamp()
        hit = (t_s >= start) & (t_s < end)
        if inc.dimension == "brand":
            if inc.segment not in brand_index:
                raise InputError(f"Incident {inc.id}: unknown brand {inc.segment!r}")
            hit &= brand == brand_index[inc.segment]
        elif inc.dimension == "price_band":
            hit &= band == BAND_LABELS.index(inc.segment)
        factor: np.ndarray | float = inc.factor
        if inc.kind == "decline":
            progress = np.clip((t_s[hit] - start) / max(end - start, 1), 0, 1)
            factor = 1 + (inc.factor - 1) * progress
        mult[inc.step][hit] *= factor
        hits.append((hit, np.broadcast_to(np.asarray(factor, dtype=float), (int(hit.sum()),))))
    return mult, hits


def _ideal_z(
    inc: Incident,
    hit: np.ndarray,
    factor: np.ndarray,
    p_cart0: np.ndarray,
    p_buy0: np.ndarray,
    kept: float,
) -> float:
    """Combined z over the incident of the best test that knows the true per-event rates.

    Expected counts under the incident minus under normal operation, over the binomial (or
    Poisson for traffic) standard deviation under normal operation; `kept` is the share of
    drawn interactions that end up in the output.
    """
    if inc.step == "purchase":  # purchases among carts
        pc, pb = p_cart0[hit], p_buy0[hit]
        shift = np.sum(pc * (np.clip(pb * factor, 0, 0.98) - pb))
        var = np.sum(pc * pb * (1 - pb))
    elif inc.step == "cart":  # carts among views
        pc = p_cart0[hit]
        shift = np.sum(np.clip(pc * factor, 0, 0.98) - pc)
        var = np.sum(pc * (1 - pc))
    else:  # views / traffic: a count against its Poisson expectation
        base = (1 - SKIP_VIEW) * hit.sum()
        shift = (1 - SKIP_VIEW) * np.sum(factor - 1)
        var = base
    if var <= 0:
        return 0.0
    return float(np.sqrt(kept) * shift / np.sqrt(var))


def generate_events(
    rows: int,
    *,
    seed: int = 0,
    start: datetime = datetime(2019, 10, 1, tzinfo=UTC),
    days: int = 61,
    brands: int = 250,
    incidents: Sequence[Incident] = (),
) -> pa.Table:
    """Return exactly `rows` events sorted by time, deterministic for a seed."""
    return generate_labelled(
        rows, seed=seed, start=start, days=days, brands=brands, incidents=incidents
    )[0]


def generate_labelled(
    rows: int,
    *,
    seed: int = 0,
    start: datetime = datetime(2019, 10, 1, tzinfo=UTC),
    days: int = 61,
    brands: int = 250,
    incidents: Sequence[Incident] = (),
    oversample: float = 1.12,
) -> tuple[pa.Table, list[Incident]]:
    """Events as `generate_events`, and the incidents with their `ideal_z` filled in.

    `oversample` is how many more events than `rows` to draw before sampling exactly `rows`.
    """
    if rows <= 0:
        raise InputError("--rows must be a positive number")
    if days <= 0:
        raise InputError("--days must be a positive number")
    rng = np.random.default_rng(seed)
    names = brand_names(brands, rng)

    # Products: heavy-tailed popularity, brand mix and prices like the cosmetics shop.
    n_products = max(3_000, min(60_000, rows // 50))
    brand_weights = 1.0 / np.arange(1, brands + 1) ** 1.1
    brand_weights /= brand_weights.sum()
    product_brand = rng.choice(brands, size=n_products, p=brand_weights)
    product_brand[rng.random(n_products) < NULL_BRAND_SHARE] = -1
    product_price = np.round(np.exp(rng.normal(np.log(6.0), 1.05, n_products)), 2).clip(0.05, 400)
    product_price[rng.random(n_products) < ZERO_PRICE_SHARE] = 0.0
    product_category = rng.integers(0, 400, n_products)
    product_code = np.where(
        rng.random(n_products) < CATEGORY_SHARE,
        rng.integers(0, len(CATEGORY_CODES), n_products),
        -1,
    )
    product_ids = rng.choice(np.arange(3_750_000, 5_950_000), size=n_products, replace=False)
    popularity = 1.0 / np.arange(1, n_products + 1) ** 0.9
    # Brand traffic is Zipf (share ~ 1/rank, a long tail); products share their brand's traffic.
    brand_traffic = np.append(
        (1 - NULL_BRAND_SHARE) * _zipf(brands),
        NULL_BRAND_SHARE,
    )
    slot = np.where(product_brand < 0, brands, product_brand)
    within = np.bincount(slot, weights=popularity, minlength=brands + 1)
    popularity = popularity * brand_traffic[slot] / within[slot]
    popularity /= popularity.sum()
    brand_cart = np.clip(rng.normal(BASE_CART, 0.08, brands + 1), 0.2, 0.85)
    brand_buy = np.clip(rng.normal(BASE_PURCHASE, 0.06, brands + 1), 0.08, 0.6)

    # Sessions: start times follow a daily and a weekly cycle.
    events_per_session = SESSION_INTERACTIONS_MEAN * 1.9 * (1 + DUPLICATE_SHARE)
    n_sessions = int(rows * oversample / events_per_session) + 50
    hours = np.arange(days * 24)
    hour_of_day = hours % 24
    weekday = (start.weekday() + hours // 24) % 7
    intensity = (1 + 0.75 * np.sin(2 * np.pi * (hour_of_day - 10) / 24)) * np.where(
        weekday >= 5, 1.15, 1.0
    )
    session_hour = rng.choice(hours, size=n_sessions, p=intensity / intensity.sum())
    session_start = start.timestamp() + session_hour * 3600.0 + rng.random(n_sessions) * 3600
    n_users = max(10, n_sessions * 2 // 3)
    session_user = (
        400_000_000 + rng.zipf(1.6, n_sessions) % n_users * 7 + rng.integers(0, 7, n_sessions)
    )
    per_session = rng.geometric(1 / SESSION_INTERACTIONS_MEAN, n_sessions)

    # Interactions: one product each, spaced within the session.
    session_of = np.repeat(np.arange(n_sessions), per_session)
    gaps = rng.exponential(40.0, len(session_of))
    csum = np.cumsum(gaps)
    first = np.concatenate(([0], np.cumsum(per_session)[:-1]))
    offsets = csum - np.repeat(csum[first] - gaps[first], per_session)
    t = session_start[session_of] + offsets
    product = rng.choice(n_products, size=len(session_of), p=popularity)
    brand = product_brand[product]
    band = price_band(product_price[product])
    hod = ((t // 3600) % 24).astype(int)
    daily_conv = 1 + 0.08 * np.sin(2 * np.pi * (hod - 14) / 24)

    mult, hits = _incident_multipliers(incidents, t, brand, band, names)
    keep = rng.random(len(t)) < np.minimum(mult["traffic"], 1.0)
    extra = rng.random(len(t)) < np.maximum(mult["traffic"] - 1.0, 0.0)
    p_cart0 = np.clip(brand_cart[brand] * daily_conv, 0, 0.98)
    p_buy0 = np.clip(brand_buy[brand] * daily_conv, 0, 0.98)
    p_cart = np.clip(p_cart0 * mult["cart"], 0, 0.98)
    p_buy = np.clip(p_buy0 * mult["purchase"], 0, 0.98)
    carted = rng.random(len(t)) < p_cart
    bought = carted & (rng.random(len(t)) < p_buy)
    removed = carted & ~bought & (rng.random(len(t)) < REMOVE_GIVEN_ABANDON)
    viewed = (rng.random(len(t)) >= SKIP_VIEW) & (
        rng.random(len(t)) < np.minimum(mult["views"], 1.0)
    )

    idx_parts, type_parts, time_parts = [], [], []
    for code, mask, delay in (
        (0, viewed, 0.0),
        (1, carted, 20.0),
        (2, removed, 90.0),
        (3, bought, 120.0),
    ):
        for present in (mask & keep, mask & extra):
            sel = np.flatnonzero(present)
            idx_parts.append(sel)
            type_parts.append(np.full(len(sel), code, dtype=np.int8))
            time_parts.append(t[sel] + (rng.exponential(delay, len(sel)) if delay else 0.0))
    ev = np.concatenate(idx_parts)
    ev_type = np.concatenate(type_parts)
    ev_time = np.floor(np.concatenate(time_parts))

    dup = np.flatnonzero(rng.random(len(ev)) < DUPLICATE_SHARE)
    ev = np.concatenate([ev, ev[dup]])
    ev_type = np.concatenate([ev_type, ev_type[dup]])
    ev_time = np.concatenate([ev_time, ev_time[dup]])
    end_s = start.timestamp() + days * 86400 - 1
    inside = np.flatnonzero(ev_time <= end_s)
    if len(inside) < rows:
        # Random session lengths fell short (small runs): draw again with more sessions.
        if oversample > 20:
            raise InputError(f"Could not generate {rows} rows for {days} days; raise --days")
        return generate_labelled(
            rows,
            seed=seed,
            start=start,
            days=days,
            brands=brands,
            incidents=incidents,
            oversample=oversample * 1.5,
        )
    kept = rows / len(inside)
    labelled = [
        replace(inc, ideal_z=round(_ideal_z(inc, hit, factor, p_cart0, p_buy0, kept), 2))
        for inc, (hit, factor) in zip(incidents, hits, strict=True)
    ]
    chosen = np.sort(rng.choice(inside, size=rows, replace=False))
    ev, ev_type, ev_time = ev[chosen], ev_type[chosen], ev_time[chosen]
    order = np.argsort(ev_time, kind="stable")
    ev, ev_type, ev_time = ev[order], ev_type[order], ev_time[order]

    prod = product[ev]
    sess = session_of[ev]
    session_ids = _uuids(rng, n_sessions)
    brand_dict = pa.array(names + [None], type=pa.string())
    code_dict = pa.array(list(CATEGORY_CODES) + [None], type=pa.string())
    type_dict = pa.array(["view", "cart", "remove_from_cart", "purchase"])
    pb = product_brand[prod]
    pc = product_code[prod]
    table = pa.table(
        {
            "event_time": pa.array(
                (ev_time * 1_000_000).astype("int64"), pa.timestamp("us", "UTC")
            ),
            "event_type": type_dict.take(pa.array(ev_type)),
            "product_id": pa.array(product_ids[prod].astype("int64")),
            "category_id": pa.array(1487580005000000000 + product_category[prod] * 2_718_281),
            "category_code": code_dict.take(pa.array(np.where(pc < 0, len(CATEGORY_CODES), pc))),
            "brand": brand_dict.take(pa.array(np.where(pb < 0, brands, pb))),
            "price": pa.array(product_price[prod]),
            "user_id": pa.array(session_user[sess].astype("int64")),
            "user_session": session_ids.take(pa.array(sess)),
        }
    )
    return table, labelled


@dataclass(frozen=True)
class Generated:
    """What `generate_file` wrote: the events and, with injected incidents, their labels file."""

    out: Path
    rows: int
    incidents: int
    labels: Path | None


def generate_file(
    rows: int,
    out: str | Path,
    *,
    seed: int = 0,
    start: date = date(2019, 10, 1),
    days: int = 61,
    brands: int = 250,
    inject: str | None = None,
    progress: Progress | None = None,
) -> Generated:
    """Write `rows` events from the UTC date `start` on; `inject` (auto:N, or the labels file of
    an earlier run) adds known incidents, whose labels go beside the events as OUT.labels.json."""
    from .anomaly.incidents import incidents_to_inject, save_labels  # (that module imports this)

    begin = datetime.combine(start, time(), UTC)
    planned = incidents_to_inject(inject, start=begin, days=days, brands=brands, seed=seed)
    if progress is not None:
        progress.step(f"Generating {rows:,} events")
    table, incidents = generate_labelled(
        rows, seed=seed, start=begin, days=days, brands=brands, incidents=planned
    )
    if progress is not None:
        progress.step(f"Writing {out}")
    write_events(table, out)
    labels = Path(f"{out}.labels.json") if incidents else None
    if labels is not None:
        save_labels(incidents, labels)
    return Generated(Path(out), table.num_rows, len(incidents), labels)


def write_events(table: pa.Table, out: str | Path) -> Path:
    """Write events in the raw REES46 text format (CSV, CSV.gz) or as Parquet."""
    import duckdb

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.register("events", table)
    name = path.name.lower()
    target = str(path).replace("'", "''")
    if name.endswith(".parquet"):
        con.execute(f"COPY events TO '{target}' (FORMAT parquet)")
        return path
    if not (name.endswith(".csv") or name.endswith(".csv.gz")):
        raise InputError(f"Output {path} must end in .csv, .csv.gz or .parquet")
    compression = "gzip" if name.endswith(".gz") else "none"
    con.execute(
        f"""COPY (
            SELECT strftime(event_time, '%Y-%m-%d %H:%M:%S') || ' UTC' AS event_time, event_type,
                   product_id, category_id, category_code, brand, printf('%.2f', price) AS price,
                   user_id, user_session
            FROM events
        ) TO '{target}' (HEADER, DELIMITER ',', COMPRESSION {compression}, QUOTE '"')"""
    )
    return path


def ranked_brands(brands: int, seed: int) -> list[str]:
    """Brand names in order of traffic share, as `generate_events` assigns them for this seed."""
    return brand_names(brands, np.random.default_rng(seed))
