-- gold_funnel_hourly_brand: 1-hour UTC tumbling windows per brand; NULL brand is its own group.
SELECT
    brand, {{ count_names }}, window_start,
    window_start + INTERVAL 1 HOUR AS window_end,
    {{ rates }},
    CAST(window_start AS DATE) AS window_date
FROM (
    SELECT
        date_trunc('hour', event_time) AS window_start,
        brand_norm AS brand,
        {{ counts }}
    FROM silver_events
    GROUP BY date_trunc('hour', event_time), brand_norm
) AS grouped
