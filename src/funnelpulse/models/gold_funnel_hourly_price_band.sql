-- gold_funnel_hourly_price_band: 1-hour UTC windows per price band (<10, 10-30, 30-60, 60_plus).
SELECT
    price_band, {{ count_names }}, window_start,
    window_start + INTERVAL 1 HOUR AS window_end,
    {{ rates }},
    CAST(window_start AS DATE) AS window_date
FROM (
    SELECT
        date_trunc('hour', event_time) AS window_start,
        price_band,
        {{ counts }}
    FROM silver_events
    GROUP BY date_trunc('hour', event_time), price_band
) AS grouped
