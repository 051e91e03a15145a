"""Known incidents (labels): what the generator injects and what detection is evaluated against.

Neither side owns the other: the generator writes labels, the evaluation reads them, both from here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .errors import InputError


@dataclass(frozen=True)
class Incident:
    """A known change injected into generated data: `step` of `segment` is multiplied by `factor`.

    kind: checkout_broken | checkout_partial | cart_drop | spike | outage | decline (older
    labels: drop). step: cart | purchase | traffic | views. dimension: brand | price_band | shop.
    For `decline` the factor is reached linearly at the end. `ideal_z` is how detectable it is:
    the combined z over its hours of an ideal test that knows the true rates, counting sessions
    (the independent unit) when the shop checks out baskets (None if unknown or not an incident,
    such as a `promotion` day the generator adds by itself).
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
    # The z the same ideal test reached on this draw (its expected value is ideal_z): whether
    # the ideal test, at the detector's threshold, would have found this label in this month.
    ideal_z_seen: float | None = None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)


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
                ideal_z_seen=None if r.get("ideal_z_seen") is None else float(r["ideal_z_seen"]),
            )
            for r in rows
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path}: not a labels file written by `funnelpulse generate --inject` ({exc})"
        ) from exc
