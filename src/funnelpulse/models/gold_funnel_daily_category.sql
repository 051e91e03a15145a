-- gold_funnel_daily_category: UTC calendar dates per category root; NULL category is its own group.
SELECT
    date, category_root, views, carts, purchases, revenue,
    carts / NULLIF(views, 0) AS view_to_cart_rate,
    purchases / NULLIF(carts, 0) AS cart_to_purchase_rate,
    purchases / NULLIF(views, 0) AS conversion_rate
FROM (
    SELECT
        event_date AS date,
        category_root,
        CAST(COUNT_IF(event_type = 'view') AS BIGINT) AS views,
        CAST(COUNT_IF(event_type = 'cart') AS BIGINT) AS carts,
        CAST(COUNT_IF(event_type = 'purchase') AS BIGINT) AS purchases,
        CAST(SUM(CASE WHEN event_type = 'purchase' THEN price ELSE 0.0 END) AS DOUBLE) AS revenue
    FROM silver_events
    GROUP BY event_date, category_root
) AS grouped
