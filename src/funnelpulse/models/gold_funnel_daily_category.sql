-- gold_funnel_daily_category: UTC calendar dates per category root; NULL category is its own group.
SELECT
    date, category_root, {{ count_names }},
    {{ rates }}
FROM (
    SELECT
        event_date AS date,
        category_root,
        {{ counts }}
    FROM silver_events
    GROUP BY event_date, category_root
) AS grouped
