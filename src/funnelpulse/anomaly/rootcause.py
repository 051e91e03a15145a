"""Which segments drove an anomaly, and whether through their rate or through the traffic mix.

Shift-share: the overall rate is R = sum_i w_i r_i (w_i the segment's share of the denominator).
Against the baseline (w0_i, r0_i), segment i contributes w_i r_i - w0_i r0_i to R - R0, of which
(w_i - w0_i) r0_i is a change in mix and w_i (r_i - r0_i) a change in its own rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .scoring import STEPS

BREAKDOWNS = {
    "shop": ("brand", "price_band", "category_root"),
    "brand": ("price_band", "category_root"),
    "price_band": ("brand", "category_root"),
}


class Cube:
    """Hourly counts by brand x price band x category, sorted by hour, labels coded as integers once."""

    LABELS = ("brand", "price_band", "category_root")

    def __init__(
        self, columns: dict[str, np.ndarray], names: dict[str, list[str]] | None = None
    ) -> None:
        """`columns` holds labels as text, or as integer codes into `names[label]` when given."""
        order = np.argsort(columns["hour"], kind="stable")
        self.c = {k: v[order] for k, v in columns.items()}
        self.names: dict[str, np.ndarray] = {}
        self.codes: dict[str, np.ndarray] = {}
        for label in self.LABELS:
            if names and label in names:
                self.names[label] = np.array(names[label], dtype=object)
                self.codes[label] = self.c[label].astype(np.int64)
            else:
                values = np.array([str(x) for x in self.c[label]], dtype=object)
                self.names[label], self.codes[label] = np.unique(values, return_inverse=True)
        self._cache: dict[tuple[bytes, str, str, str], dict[str, dict[str, float]]] = {}
        self.lookup = {
            label: {str(n): i for i, n in enumerate(self.names[label])} for label in self.LABELS
        }

    def _rows(self, hours: np.ndarray) -> np.ndarray:
        """Indices of every cube row in `hours` (vectorised: one arange, no loop over hours)."""
        hour = self.c["hour"]
        left = np.searchsorted(hour, hours, "left")
        lengths = np.searchsorted(hour, hours, "right") - left
        total = int(lengths.sum())
        if total == 0:
            return np.array([], dtype=np.int64)
        offsets = np.repeat(left - (np.cumsum(lengths) - lengths), lengths)
        return offsets + np.arange(total)

    def totals(
        self, hours: np.ndarray, dimension: str, segment: str, by: str
    ) -> dict[str, dict[str, float]]:
        """Views, carts and purchases of each `by` value of one segment over `hours` (cached)."""
        key = (hours.tobytes(), dimension, segment, by)
        if key not in self._cache:
            self._cache[key] = self._totals(hours, dimension, segment, by)
        return self._cache[key]

    def _totals(
        self, hours: np.ndarray, dimension: str, segment: str, by: str
    ) -> dict[str, dict[str, float]]:
        rows = self._rows(hours)
        if dimension != "shop":
            code = self.lookup[dimension].get(segment)
            if code is None:
                return {}
            rows = rows[self.codes[dimension][rows] == code]
        which = self.codes[by][rows]
        size = len(self.names[by])
        sums = {
            metric: np.bincount(which, weights=self.c[metric][rows], minlength=size)
            for metric in ("views", "carts", "purchases")
        }
        present = np.flatnonzero(np.bincount(which, minlength=size))
        return {
            str(self.names[by][i]): {metric: float(sums[metric][i]) for metric in sums}
            for i in present
        }


def explain(
    cube: Cube,
    hours: np.datetime64 | np.ndarray,
    history_days: int,
    dimension: str,
    segment: str,
    step: str,
    top: int = 5,
) -> dict[str, Any]:
    """Rank the sub-segments that explain the change of `step` over `hours` (one hour or a window)
    against the same hours on past days."""
    window = np.atleast_1d(np.asarray(hours, dtype="datetime64[us]"))
    past = np.concatenate(
        [window - np.timedelta64(24 * k, "h") for k in range(1, history_days + 1)]
    )
    result: dict[str, Any] = {}
    for by in BREAKDOWNS[dimension]:
        now = cube.totals(window, dimension, segment, by)
        before = cube.totals(past, dimension, segment, by)
        result[by] = _decompose(now, before, step, history_days)[:top]
    result["summary"] = _summary(result, step)
    return result


def _decompose(now: dict, before: dict, step: str, days: int) -> list[dict[str, Any]]:  # type: ignore[type-arg]
    keys = sorted(set(now) | set(before))
    if step == "traffic":
        changes = [
            (k, now.get(k, {}).get("views", 0.0) - before.get(k, {}).get("views", 0.0) / days)
            for k in keys
        ]
        total = sum(c for _, c in changes) or 1.0
        rows = [
            {"segment": k, "share": c / total, "kind": "volume", "change": c} for k, c in changes
        ]
        return sorted(rows, key=lambda r: -abs(r["change"]))
    num, den = STEPS[step]
    n_den = sum(v.get(den, 0.0) for v in now.values())
    b_den = sum(v.get(den, 0.0) for v in before.values())
    if n_den <= 0 or b_den <= 0:
        return []
    r0_all = sum(v.get(num, 0.0) for v in before.values()) / b_den
    rows = []
    for k in keys:
        w = now.get(k, {}).get(den, 0.0) / n_den
        w0 = before.get(k, {}).get(den, 0.0) / b_den
        r = now[k].get(num, 0.0) / now[k][den] if now.get(k, {}).get(den) else r0_all
        r0 = before[k].get(num, 0.0) / before[k][den] if before.get(k, {}).get(den) else r0_all
        mix = (w - w0) * r0
        rate = w * (r - r0)
        rows.append(
            {
                "segment": k,
                "contribution": mix + rate,
                "mix": mix,
                "rate_effect": rate,
                "observed_rate": r,
                "expected_rate": r0,
                "weight": w,
                "expected_weight": w0,
            }
        )
    total = sum(r["contribution"] for r in rows)
    for r in rows:
        r["share"] = r["contribution"] / total if total else 0.0
        r["kind"] = "rate" if abs(r["rate_effect"]) >= abs(r["mix"]) else "mix"
    return sorted(rows, key=lambda r: -abs(r["contribution"]))


def _summary(result: dict[str, Any], step: str) -> str:
    parts = []
    for by, rows in result.items():
        if rows:
            top = rows[0]
            parts.append(
                f"{by} {top['segment']} explains {top['share'] * 100:.0f}% ({top['kind']})"
            )
    return f"{step}: " + "; ".join(parts) if parts else f"{step}: no breakdown available"
