"""Every number the dashboard shows (no Streamlit here): rollups, leaderboards and series come
from `queries`, the same functions the HTTP API serves, so the numbers are one code path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from .. import queries, tables
from .. import warehouse as safety
from ..anomaly import scoring
from ..anomaly.session_rates import EVENT_STEP
from ..contract import UNKNOWN
from ..localdb import connect


@dataclass(frozen=True)
class Filter:
    start: date
    end: date
    column: str | None = None  # brand | category_root | price_band
    values: tuple[str, ...] = ()

    def previous(self) -> Filter:
        days = (self.end - self.start).days + 1
        return Filter(
            self.start - timedelta(days), self.start - timedelta(1), self.column, self.values
        )


class DashboardData:
    """Read-only access to one warehouse; missing tables are reported, never raised."""

    def __init__(self, warehouse: str) -> None:
        self.warehouse = warehouse
        self.con = connect()
        # Tables open through the queries layer, each pinned at its newest version when a page
        # first needs it: the same reads as the report, the API and SQL.
        self.snapshot = queries.Snapshot(warehouse)
        self.available = set(self.snapshot.names(tables.ALL_TABLES))
        self._registered: set[str] = set()

    def has(self, *names: str) -> bool:
        return all(n in self.available for n in names)

    def _register_for(self, sql: str) -> None:
        """Open a table only when a query first needs it: pages render without opening the rest."""
        for name in self.available - self._registered:
            if name in sql:
                self.con.register(name, self.snapshot.dataset(name))
                self._registered.add(name)

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        self._register_for(sql)
        rel = self.con.sql(sql)
        return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]

    def arrow(self, sql: str) -> pa.Table:
        self._register_for(sql)
        return self.con.sql(sql).to_arrow_table()

    # --- filters -------------------------------------------------------------------------
    def date_bounds(self) -> tuple[date, date] | None:
        # Never show gold that a killed build left stale next to a newer silver: say what to run.
        safety.check_consistent(self.warehouse)
        span: tuple[date, date] | None = queries.date_bounds(
            self.warehouse, self.snapshot
        ).data
        return span

    def options(self, column: str) -> list[str]:
        values: list[str] = queries.segment_values(self.warehouse, column, self.snapshot).data
        return values

    # --- overview ------------------------------------------------------------------------
    def funnel(self, f: Filter) -> dict[str, Any]:
        row: dict[str, Any] = queries.rollup(
            self.warehouse, f.start, f.end, f.column, f.values, self.snapshot
        ).data
        return row

    def has_data(self, f: Filter) -> bool:
        """Whether any event falls in the filter's dates (a previous period may have none)."""
        row = self.funnel(f)
        return bool(row["views"] or row["carts"] or row["purchases"])

    def incident_count(self, f: Filter) -> int | None:
        """Real events (incidents), not anomalous window rows, that overlap the chosen dates."""
        if self.has(tables.INCIDENTS):
            return len(self.incidents(f))
        if not self.has(tables.ANOMALIES):
            return None
        from ..anomaly.incidents import group_incidents

        return len(group_incidents(self.anomalies(f).to_pylist()))

    def daily(self, f: Filter, by: str | None = None) -> pa.Table:
        """Funnel per day (and per segment when `by` is given)."""
        return self.series(f, "day", by)

    def can_hourly(self, column: str | None) -> bool:
        """Categories are built per day only; brands and price bands have hourly tables."""
        return queries.can_hourly(self.warehouse, column, self.snapshot)

    def series(self, f: Filter, grain: str, by: str | None = None) -> pa.Table:
        """Funnel per `grain` (day or hour) in a `date` column, per segment when `by` is given
        (hourly series without `by` have every hour of the range, zero where nothing happened)."""
        # The chosen segments narrow the series only when it is of their own dimension.
        values = f.values if (by or f.column) == f.column else ()
        found: pa.Table = queries.series(
            self.warehouse, f.start, f.end, grain, by, f.column, values, self.snapshot
        ).data
        return found

    def segments(self, f: Filter, column: str, limit: int | None = None) -> pa.Table:
        """Leaderboard of one dimension: funnel, rates and average order value."""
        values = f.values if column == f.column else ()
        found: pa.Table = queries.leaderboard(
            self.warehouse, column, f.start, f.end, values, limit, self.snapshot
        ).data
        return found

    # --- anomalies -----------------------------------------------------------------------
    def anomalies(self, f: Filter) -> pa.Table:
        return self.arrow(
            f"""SELECT anomaly_id, window_start, window_end, window_hours, dimension, segment, step,
                type, severity, numerator, denominator, observed_rate, expected_rate, z,
                lost_purchases, lost_revenue, root_cause
            FROM {tables.ANOMALIES}
            WHERE window_date BETWEEN DATE '{f.start}' AND DATE '{f.end}'
            ORDER BY window_start, dimension, segment"""
        )

    def hourly_segment(self, dimension: str, segment: str, start: date, end: date) -> pa.Table:
        """Hourly funnel of one segment between two dates, every hour present (zeros filled);
        shop-wide for a dimension without an hourly table."""
        kept = dimension if dimension in queries.HOURLY else None
        found: pa.Table = queries.series(
            self.warehouse,
            start,
            end,
            "hour",
            dimension=kept,
            values=(segment,) if kept else (),
            snapshot=self.snapshot,
        ).data
        return found.select(["date", "views", "carts", "purchases"]).rename_columns(
            ["hour", "views", "carts", "purchases"]
        )

    def expected_band(
        self, anomaly: dict[str, Any], history_days: int, days_around: int = 3
    ) -> pa.Table:
        """The segment's hourly rate around an anomaly with its expected value and a 3-sigma band."""
        if anomaly["step"] == "traffic":
            num_name, den_name = "views", None
        else:  # a session rate is drawn from its event-count step (the cube has no sessions)
            num_name, den_name = scoring.STEPS[EVENT_STEP.get(anomaly["step"], anomaly["step"])]
        day = anomaly["window_start"].date()
        start = day - timedelta(days=history_days + days_around)
        hourly = self.hourly_segment(
            anomaly["dimension"], anomaly["segment"], start, day + timedelta(days_around)
        )
        num = hourly.column(num_name).to_numpy().astype(float)[None, :]
        if den_name is None:
            base = scoring.count_baseline(num, history_days)
            expected = base.expected[0]
            # the detector's own spread at each hour (trailing, so no look-ahead)
            sd = np.sqrt(expected + (base.cv[0] * expected) ** 2)
            observed = num[0]
        else:
            den = hourly.column(den_name).to_numpy().astype(float)[None, :]
            rate = scoring.rate_baseline(num, den, history_days)
            expected = rate.expected[0]
            n = np.maximum(den[0], 1)
            icc = rate.rho[0] + 1 / (rate.strength[0] + 1)  # as the scorer inflates it
            sd = np.sqrt(expected * (1 - expected) * (1 + (n - 1) * icc) / n)
            with np.errstate(invalid="ignore", divide="ignore"):
                observed = np.where(den[0] > 0, num[0] / den[0], np.nan)
        keep = hourly.column("hour").to_numpy() >= np.datetime64(
            day - timedelta(days=days_around), "us"
        )
        return pa.table(
            {
                "hour": hourly.column("hour").filter(pa.array(keep)),
                "observed": observed[keep],
                "expected": expected[keep],
                "low": np.maximum(expected - 3 * sd, 0)[keep],
                "high": (expected + 3 * sd)[keep],
            }
        )

    def incidents(self, f: Filter) -> list[dict[str, Any]]:
        """The lasting incidents (one per real event) that overlap the chosen dates."""
        if not self.has(tables.INCIDENTS):
            return []
        return self._rows(
            f"""SELECT * FROM {tables.INCIDENTS}
            WHERE CAST(started_at AS DATE) <= DATE '{f.end}'
                AND CAST(ended_at AS DATE) >= DATE '{f.start}'
            ORDER BY started_at, incident_id"""
        )

    def annotations(self) -> list[dict[str, Any]]:
        """Known events marked with `funnelpulse annotate`."""
        if not self.has(tables.ANNOTATIONS):
            return []
        return self._rows(f"SELECT * FROM {tables.ANNOTATIONS} ORDER BY start")

    def coverage_gaps(self) -> list[dict[str, Any]]:
        """Hours with no event at all, shop-wide (never received): start, end, hours."""
        return queries.coverage_gaps(self.warehouse).data

    @staticmethod
    def root_cause(anomaly: dict[str, Any]) -> dict[str, Any]:
        return json.loads(anomaly["root_cause"]) if anomaly.get("root_cause") else {}

    # --- live ----------------------------------------------------------------------------
    def live_current_hour(self) -> pa.Table:
        return self.arrow(
            f"""SELECT coalesce(brand, '{UNKNOWN}') AS brand, views, carts, purchases, revenue,
                conversion_rate, window_start
            FROM {tables.GOLD_STREAM}
            WHERE window_start = (SELECT MAX(window_start) FROM {tables.GOLD_STREAM})
            ORDER BY revenue DESC"""
        )

    def latest_alerts(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest alerts, one row per alert (its sinks listed), newest sent first."""
        from .formats import newest_alerts

        found = self._rows(
            f"""SELECT incident_id, recorded_at, sink, status, severity, dimension, segment,
                incident_start, message
            FROM {tables.ALERTS} ORDER BY recorded_at DESC LIMIT {limit * 20}"""
        )
        return newest_alerts(found, limit)
