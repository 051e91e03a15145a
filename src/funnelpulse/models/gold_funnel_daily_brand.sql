-- gold_funnel_daily_brand: UTC calendar dates per brand.
SELECT
    date, brand, views, carts, purchases, revenue,
    carts / NULLIF(views, 0) AS view_to_cart_rate,
    purchases / NULLIF(carts, 0) AS cart_to_purchase_rate,
    purchases / NULLIF(views, 0) AS conversion_rate
FROM (
    SELECT
        event_date AS date,
        brand_norm AS brand,
        CAST(COUNT_IF(event_type = 'view') AS BIGINT) AS views,
        CAST(COUNT_IF(event_type = 'cart') AS BIGINT) AS carts,
        CAST(COUNT_IF(event_type = 'purchase') AS BIGINT) AS purchases,
        CAST(SUM(CASE WHEN event_type = 'purchase' THEN price ELSE 0.0 END) AS DOUBLE) AS revenue
    FROM silver_events
    GROUP BY event_date, brand_norm
) AS grouped
