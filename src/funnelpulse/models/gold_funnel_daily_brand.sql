-- gold_funnel_daily_brand: UTC calendar dates per brand.
SELECT
    date, brand, {{ count_names }},
    {{ rates }}
FROM (
    SELECT
        event_date AS date,
        brand_norm AS brand,
        {{ counts }}
    FROM silver_events
    GROUP BY event_date, brand_norm
) AS grouped
