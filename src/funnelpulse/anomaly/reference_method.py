"""The `reference` method: the original project's all-history z-score of each brand's hourly
conversion (reference-behaviour section 6), reproduced for comparison only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from .. import tables
from ..contract import anomaly_id
from ..errors import WarehouseError
from . import scoring

REFERENCE_SQL = """
WITH base AS (
    SELECT *, hour(window_start) AS hour_of_day
    FROM gold WHERE views >= 20 AND brand IS NOT NULL
), stats AS (
    SELECT *,
        avg(conversion_rate) OVER (PARTITION BY brand) AS m_b,
        stddev_samp(conversion_rate) OVER (PARTITION BY brand) AS s_b,
        avg(conversion_rate) OVER (PARTITION BY brand, hour_of_day) AS m_bh,
        stddev_samp(conversion_rate) OVER (PARTITION BY brand, hour_of_day) AS s_bh
    FROM base
), scored AS (
    SELECT *,
        CASE WHEN s_b IS NULL OR s_b = 0 THEN 0.0 ELSE (conversion_rate - m_b) / s_b END AS z_b,
        CASE WHEN s_bh IS NULL OR s_bh = 0 THEN 0.0 ELSE (conversion_rate - m_bh) / s_bh END AS z_bh
    FROM stats
)
SELECT brand, window_start::TIMESTAMP AS window_start, views, purchases, conversion_rate, m_b, m_bh, z_b, z_bh,
    CASE WHEN views >= 50 AND (z_b <= -2.0 OR z_bh <= -2.0) THEN 'drop'
         WHEN views >= 50 AND (z_b >= 2.0 OR z_bh >= 2.0) THEN 'spike' END AS kind
FROM scored
WHERE views >= 50 AND (z_b <= -2.0 OR z_bh <= -2.0 OR z_b >= 2.0 OR z_bh >= 2.0)
"""


def reference(warehouse: str, con) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The original project's z-score (reference-behaviour section 6), in UTC hours."""
    gold = tables.table_path(warehouse, tables.GOLD_HOURLY_BRAND)
    if not tables.exists(gold):
        raise WarehouseError(
            f"No gold_funnel_hourly_brand in {warehouse}. Run `funnelpulse build` first"
        )
    con.register("gold", tables.dataset(gold))
    now = datetime.now(UTC)
    rows = []
    for brand, start, views, purchases, rate, m_b, m_bh, z_b, z_bh, kind in con.sql(
        REFERENCE_SQL
    ).fetchall():
        start = start.replace(tzinfo=UTC)
        # The reference flags on whichever baseline crosses; report that baseline.
        use_hour = (z_bh <= -2.0) if kind == "drop" else (z_bh >= 2.0)
        z = z_bh if use_hour else z_b
        expected = m_bh if use_hour else m_b
        rows.append(
            {
                "anomaly_id": anomaly_id("reference", "brand", brand, "conversion", start),
                "method": "reference",
                "window_start": start,
                "window_end": start + timedelta(hours=1),
                "dimension": "brand",
                "segment": brand,
                "step": "conversion",
                "type": kind,
                "observed_rate": rate,
                "expected_rate": expected,
                "numerator": purchases,
                "denominator": views,
                "z": z,
                "p_value": float(scoring.p_value(np.array(z))),
                "severity": str(scoring.severity(z)),
                "lost_purchases": (expected - rate) * views,
                "lost_revenue": None,
                "root_cause": None,
                "detected_at": now,
                "window_date": start.date(),
                "window_hours": 1,
            }
        )
    return rows
