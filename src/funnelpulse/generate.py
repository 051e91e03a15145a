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
from .errors import ConfigError, InputError
from .labels import Incident, load_labels, save_labels

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
class Shape:
    """How the generated shop behaves over time and within a session.

    basket_mean: mean items a session carts and checks out together (1: every item decides on its
    own). growth: relative traffic change from the first to the last day. season: amplitude of a
    yearly traffic cycle peaking at `season_peak_day` (day of year). drift: daily step (sd of the
    log odds) of each brand's and price band's cart and purchase rates, mean-reverting.
    promo_days: promotion days per 30 days (traffic x`promo_traffic`, carts x`promo_cart`,
    purchases x`promo_purchase`).
    """

    basket_mean: float = 1.0
    growth: float = 0.0
    season: float = 0.0
    season_peak_day: int = 320
    drift: float = 0.0
    promo_days: float = 0.0
    promo_traffic: float = 2.5
    promo_cart: float = 1.15
    promo_purchase: float = 1.1

    @property
    def stationary(self) -> bool:
        return (
            self.basket_mean <= 1
            and self.growth == 0
            and self.season == 0
            and self.drift == 0
            and self.promo_days == 0
        )


# One item per decision, flat traffic, fixed rates: the shape tests and speed benchmarks pin.
PLAIN = Shape()
# The default of `funnelpulse generate`. basket_mean is measured on the bundled REES46 cosmetics
# sample (distinct items per order: 9.1 in October, 10.7 in December, shifted-geometric shape);
# the rest are stated assumptions: growth and season from the cosmetics shop's monthly volumes
# (4.10M, 4.64M, 3.53M, 4.26M events Oct-Jan: swings of 10-25% a month, peak in November), drift
# and promotion days from what shops typically see (a few % a day; about one sale day a month).
REAL = Shape(basket_mean=9.0, growth=0.1, season=0.12, drift=0.05, promo_days=1.0)
PROMOTION_KIND = "promotion"

KINDS = (
    # kind, dimension, step, factor, shortest and longest hours
    ("checkout_broken", "brand", "purchase", 0.0, 1, 8),  # nobody can pay
    ("checkout_partial", "brand", "purchase", 0.2, 1, 8),  # most payments fail
    ("cart_drop", "brand", "cart", 0.3, 1, 8),  # add-to-cart broken for most
    ("spike", "brand", "purchase", 2.2, 1, 8),  # a campaign converts unusually well
    ("outage", "shop", "views", 0.1, 1, 6),  # tracking outage: 90% of views vanish shop-wide
    ("decline", "brand", "purchase", 0.15, 4, 8),  # slow decline towards -85%
)
SPACING_H = 16  # labels start at least this far apart


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


def _pair_sum(session: np.ndarray, fn: object) -> float:
    """Sum of fn(i, j) over every ordered pair of items (i == j included) in the same session."""
    order = np.argsort(session, kind="stable")
    sess = session[order]
    total = 0.0
    for d in range(len(sess)):
        same = sess[d:] == sess[: len(sess) - d]
        if not same.any():
            break
        i, j = order[: len(sess) - d][same], order[d:][same]
        total += (1.0 if d == 0 else 2.0) * float(np.sum(fn(i, j)))  # type: ignore[operator]
    return total


def _ideal_z_sessions(
    inc: Incident,
    hit: np.ndarray,
    factor: np.ndarray,
    p_cart0: np.ndarray,
    p_buy0: np.ndarray,
    session: np.ndarray,
    kept: float,
) -> float:
    """`_ideal_z` when a session decides its basket together: the variance of a segment's count
    is summed over sessions (the independent unit), covariances of items in one basket included."""
    pc, pb, sess = p_cart0[hit], p_buy0[hit], session[hit]
    if inc.step == "purchase":
        shift = np.sum(pc * (np.clip(pb * factor, 0, 0.98) - pb))
        var = _pair_sum(
            sess,
            lambda i, j: np.minimum(pc[i], pc[j]) * (np.minimum(pb[i], pb[j]) - pb[i] * pb[j]),
        )
    elif inc.step == "cart":
        shift = np.sum(np.clip(pc * factor, 0, 0.98) - pc)
        var = _pair_sum(sess, lambda i, j: np.minimum(pc[i], pc[j]) - pc[i] * pc[j])
    else:  # a count of views: compound Poisson over sessions
        per_session = np.bincount(np.unique(sess, return_inverse=True)[1])
        shift = (1 - SKIP_VIEW) * np.sum(factor - 1)
        var = (1 - SKIP_VIEW) * float(np.sum(per_session.astype(float) ** 2))
    if var <= 0:
        return 0.0
    return float(np.sqrt(kept) * shift / np.sqrt(var))


def _ideal_z_seen(
    inc: Incident,
    hit: np.ndarray,
    factor: np.ndarray,
    p_cart0: np.ndarray,
    p_buy0: np.ndarray,
    carted: np.ndarray,
    bought: np.ndarray,
    viewed: np.ndarray,
) -> float | None:
    """The ideal test's z on the events drawn: (observed - expected without the incident) over the
    same standard deviation as `ideal_z`, i.e. ideal_z scaled by the observed over the expected shift."""
    if inc.ideal_z is None:
        return None
    if inc.step == "purchase":
        pc, pb = p_cart0[hit], p_buy0[hit]
        shift = np.sum(pc * (np.clip(pb * factor, 0, 0.98) - pb))
        seen = bought[hit].sum() - np.sum(pc * pb)
    elif inc.step == "cart":
        pc = p_cart0[hit]
        shift = np.sum(np.clip(pc * factor, 0, 0.98) - pc)
        seen = carted[hit].sum() - np.sum(pc)
    else:
        shift = (1 - SKIP_VIEW) * np.sum(factor - 1)
        seen = viewed[hit].sum() - (1 - SKIP_VIEW) * hit.sum()
    if shift == 0:
        return 0.0
    return round(float(inc.ideal_z * seen / shift), 2)


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
    shape: Shape = PLAIN,
) -> pa.Table:
    """Return exactly `rows` events sorted by time, deterministic for a seed."""
    return generate_labelled(
        rows, seed=seed, start=start, days=days, brands=brands, incidents=incidents, shape=shape
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
    shape: Shape = PLAIN,
) -> tuple[pa.Table, list[Incident]]:
    """Events as `generate_events`, and the incidents with their `ideal_z` filled in.

    `oversample` is how many more events than `rows` to draw before sampling exactly `rows`.
    Promotion days of `shape` are returned as labels of kind `promotion` after the incidents.
    """
    if rows <= 0:
        raise InputError("--rows must be a positive number")
    if days <= 0:
        raise InputError("--days must be a positive number")
    rng = np.random.default_rng(seed)
    names = brand_names(brands, rng)
    incidents = [inc for inc in incidents if inc.kind != PROMOTION_KIND]  # the shape adds them
    # Draws for the shape come from their own stream, so the plain shape stays as it always was.
    shape_rng = np.random.default_rng([seed, 104_729])
    promos = _promotion_days(shape, start, days, incidents, shape_rng)

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
    per_session_mean = shape.basket_mean if shape.basket_mean > 1 else SESSION_INTERACTIONS_MEAN
    events_per_session = per_session_mean * 1.9 * (1 + DUPLICATE_SHARE)
    n_sessions = int(rows * oversample / events_per_session) + 50
    hours = np.arange(days * 24)
    hour_of_day = hours % 24
    weekday = (start.weekday() + hours // 24) % 7
    intensity = (1 + 0.75 * np.sin(2 * np.pi * (hour_of_day - 10) / 24)) * np.where(
        weekday >= 5, 1.15, 1.0
    )
    if not shape.stationary:
        intensity = intensity * _traffic_level(shape, start, days, promos)
    session_hour = rng.choice(hours, size=n_sessions, p=intensity / intensity.sum())
    session_start = start.timestamp() + session_hour * 3600.0 + rng.random(n_sessions) * 3600
    n_users = max(10, n_sessions * 2 // 3)
    session_user = (
        400_000_000 + rng.zipf(1.6, n_sessions) % n_users * 7 + rng.integers(0, 7, n_sessions)
    )
    per_session = rng.geometric(1 / per_session_mean, n_sessions)

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
    cart_level, buy_level = brand_cart[brand] * daily_conv, brand_buy[brand] * daily_conv
    if not shape.stationary:
        day = np.clip(((t - start.timestamp()) // 86400).astype(np.int64), 0, days - 1)
        promo_days = [int((p.start - start).total_seconds() // 86400) for p in promos]
        cart_move, buy_move = _rate_moves(shape, days, brand, band, day, promo_days, shape_rng)
        cart_level, buy_level = _shift_odds(cart_level, cart_move), _shift_odds(buy_level, buy_move)
    if shape.basket_mean > 1:
        # A basket is decided once, at the rates of the item the session started with; an
        # incident still moves each of its items' odds (its factor below), exactly on average.
        lead = first[session_of]
        cart_level, buy_level = cart_level[lead], buy_level[lead]
    p_cart0 = np.clip(cart_level, 0, 0.98)
    p_buy0 = np.clip(buy_level, 0, 0.98)
    p_cart = np.clip(p_cart0 * mult["cart"], 0, 0.98)
    p_buy = np.clip(p_buy0 * mult["purchase"], 0, 0.98)
    if shape.basket_mean > 1:
        # One decision per session (a shared draw): it carts its items and buys the basket whole.
        carted = rng.random(n_sessions)[session_of] < p_cart
        bought = carted & (rng.random(n_sessions)[session_of] < p_buy)
    else:
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
            shape=shape,
        )
    kept = rows / len(inside)
    if shape.basket_mean > 1:
        labelled = [
            replace(
                inc,
                ideal_z=round(
                    _ideal_z_sessions(inc, hit, factor, p_cart0, p_buy0, session_of, kept), 2
                ),
            )
            for inc, (hit, factor) in zip(incidents, hits, strict=True)
        ]
    else:
        labelled = [
            replace(inc, ideal_z=round(_ideal_z(inc, hit, factor, p_cart0, p_buy0, kept), 2))
            for inc, (hit, factor) in zip(incidents, hits, strict=True)
        ]
    labelled = [
        replace(
            inc,
            ideal_z_seen=_ideal_z_seen(inc, hit, factor, p_cart0, p_buy0, carted, bought, viewed),
        )
        for inc, (hit, factor) in zip(labelled, hits, strict=True)
    ]
    labelled += promos
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


def _promotion_days(
    shape: Shape,
    start: datetime,
    days: int,
    incidents: Sequence[Incident],
    rng: np.random.Generator,
) -> list[Incident]:
    """Whole UTC days of promotion, away from the incidents (a label each, never an incident)."""
    count = int(np.floor(shape.promo_days * days / 30 + rng.random()))
    if count <= 0:
        return []
    busy: set[int] = set()
    for inc in incidents:
        first = int((inc.start - start).total_seconds() // 86400)
        last = int(((inc.end - start).total_seconds() - 1) // 86400)
        busy.update(range(first - 1, last + 2))
    free = [d for d in range(1, days) if d not in busy]
    chosen = sorted(rng.choice(free, size=min(count, len(free)), replace=False)) if free else []
    return [
        Incident(
            id=f"promo{i + 1:02d}",
            kind=PROMOTION_KIND,
            dimension="shop",
            segment="all",
            step="traffic",
            start=start + timedelta(days=int(d)),
            hours=24,
            factor=shape.promo_traffic,
        )
        for i, d in enumerate(chosen)
    ]


def _traffic_level(
    shape: Shape, start: datetime, days: int, promos: Sequence[Incident]
) -> np.ndarray:
    """Per hour: the trend (linear, `growth` from first to last day), the yearly season and the
    promotion days, as a multiplier of the daily and weekly cycle."""
    hours = np.arange(days * 24)
    day = hours // 24
    level = 1 + shape.growth * day / max(days - 1, 1)
    day_of_year = start.timetuple().tm_yday + day
    level = level * (
        1 + shape.season * np.cos(2 * np.pi * (day_of_year - shape.season_peak_day) / 365.25)
    )
    for promo in promos:
        first = int((promo.start - start).total_seconds() // 3600)
        level[first : first + promo.hours] *= shape.promo_traffic
    return np.maximum(level, 0.01)


def _shift_odds(rate: np.ndarray, log_odds: np.ndarray) -> np.ndarray:
    """The rate with its odds multiplied by exp(log_odds): drift never pushes a rate past 1."""
    rate = np.clip(rate, 1e-6, 1 - 1e-6)
    odds = rate / (1 - rate) * np.exp(log_odds)
    return odds / (1 + odds)


DRIFT_MEMORY = 0.8  # day-to-day persistence of a segment's rate drift (AR(1) coefficient)


def _rate_moves(
    shape: Shape,
    days: int,
    brand: np.ndarray,
    band: np.ndarray,
    day: np.ndarray,
    promo_days: list[int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Per interaction: log-odds shifts of its cart and purchase rates from its brand's and
    price band's daily drift (mean-reverting, steps of sd `drift`) and from promotion days."""
    moves = []
    for promo_factor in (shape.promo_cart, shape.promo_purchase):
        log_move = np.zeros(len(day))
        if shape.drift > 0:
            for keys, count in ((brand, int(brand.max(initial=0)) + 2), (band, 4)):
                walk = np.zeros((count, days))
                walk[:, 0] = rng.normal(0, shape.drift / np.sqrt(1 - DRIFT_MEMORY**2), count)
                for d in range(1, days):
                    walk[:, d] = DRIFT_MEMORY * walk[:, d - 1] + rng.normal(0, shape.drift, count)
                log_move += walk[keys, day]
        if promo_days:
            log_move[np.isin(day, promo_days)] += np.log(promo_factor)
        moves.append(log_move)
    return moves[0], moves[1]


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
    shape: Shape = REAL,
) -> Generated:
    """Write `rows` events from the UTC date `start` on; `inject` (auto:N, or the labels file of
    an earlier run) adds known incidents, whose labels go beside the events as OUT.labels.json
    (with the shape's promotion days). `shape` defaults to a shop like the real sample (`REAL`)."""
    begin = datetime.combine(start, time(), UTC)
    planned = incidents_to_inject(inject, start=begin, days=days, brands=brands, seed=seed)
    if progress is not None:
        progress.step(f"Generating {rows:,} events")
    table, incidents = generate_labelled(
        rows, seed=seed, start=begin, days=days, brands=brands, incidents=planned, shape=shape
    )
    if progress is not None:
        progress.step(f"Writing {out}")
    write_events(table, out)
    labels = Path(f"{out}.labels.json") if planned else None
    if labels is not None:
        save_labels(incidents, labels)
    return Generated(Path(out), table.num_rows, len(planned), labels)


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
