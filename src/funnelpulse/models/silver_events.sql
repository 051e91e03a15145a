-- silver_events: the reference's cleaning rules, computed in UTC. Placeholders in double braces
-- are filled from funnelpulse/contract.py (price bands, dedup key, funnel metrics).
-- Keeps rows with a positive price, a time and a type; normalises brand and category;
-- flags missing fields; drops exact repeats of (event_time, user_id, user_session,
-- product_id, event_type), keeping the row that was ingested first (deterministic).
SELECT
    event_time, event_type, product_id, category_id, category_code, brand, price, user_id,
    user_session, brand_norm, category_code_norm,
    split_part(category_code_norm, '.', 1) AS category_root,
    {{ price_band }} AS price_band,
    user_session IS NULL AS dq_missing_session,
    brand IS NULL AS dq_missing_brand,
    category_code IS NULL AS dq_missing_category,
    event_date
FROM (
    SELECT
        *,
        NULLIF(TRIM(LOWER(brand)), '') AS brand_norm,
        REGEXP_REPLACE(LOWER(category_code), '[^a-z0-9.]', '_', 'g') AS category_code_norm,
        ROW_NUMBER() OVER (
            PARTITION BY {{ dedup_key }}
            ORDER BY source_file, source_row
        ) AS copy_number
    FROM bronze_events
    WHERE price IS NOT NULL AND price > 0 AND event_time IS NOT NULL AND event_type IS NOT NULL
) AS numbered
WHERE copy_number = 1
