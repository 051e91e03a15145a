-- gold_funnel_hourly_price_band: 1-hour UTC windows per price band (<10, 10-30, 30-60, 60_plus).
SELECT
    price_band, views, carts, purchases, revenue, window_start,
    window_start + INTERVAL 1 HOUR AS window_end,
    carts / NULLIF(views, 0) AS view_to_cart_rate,
    purchases / NULLIF(carts, 0) AS cart_to_purchase_rate,
    purchases / NULLIF(views, 0) AS conversion_rate,
    CAST(window_start AS DATE) AS window_date
FROM (
    SELECT
        date_trunc('hour', event_time) AS window_start,
        price_band,
        CAST(COUNT_IF(event_type = 'view') AS BIGINT) AS views,
        CAST(COUNT_IF(event_type = 'cart') AS BIGINT) AS carts,
        CAST(COUNT_IF(event_type = 'purchase') AS BIGINT) AS purchases,
        CAST(SUM(CASE WHEN event_type = 'purchase' THEN price ELSE 0.0 END) AS DOUBLE) AS revenue
    FROM silver_events
    GROUP BY date_trunc('hour', event_time), price_band
) AS grouped
