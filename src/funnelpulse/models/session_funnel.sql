-- session_funnel: ordered view -> cart -> purchase funnel per actor, within a conversion window.
-- One definition for the `funnel` command and the gold_session_funnel_* tables, on both engines.
-- An actor is (unit, held, product): unit is user_session (or user_id); held is the breakdown
-- value held constant (brand, category root, price band, or one constant); product is product_id
-- with --same-product, else one constant. Entry: the actor's first view ever (views are read up to
-- the last entry date). Cart: its first cart at or after the entry and at most {window_seconds} s
-- after it. Purchase: its first purchase at or after that cart and at most {window_seconds} s after
-- the entry. Revenue: every purchase of the actor in that same span. Counted at the entry's UTC
-- {grain_label}. Placeholders in braces are filled by funnelpulse.funnel (numbers and fixed
-- column expressions only, never user text).
WITH events AS (
    SELECT
        {unit} AS unit,
        {held} AS held,
        {product} AS product,
        event_type, event_time, price, event_date
    FROM silver_events
    WHERE {unit} IS NOT NULL AND ({view_dates} OR {step_dates})
),
entries AS (
    SELECT {unit} AS unit, {held} AS held, {product} AS product, MIN(event_time) AS entry_time
    FROM silver_events
    WHERE {unit} IS NOT NULL AND event_type = 'view' AND {view_dates} {recent_units}
    GROUP BY {unit}, {held}, {product}
),
entered AS (
    SELECT * FROM entries WHERE {entry_dates}
),
steps AS (
    SELECT {unit} AS unit, {held} AS held, {product} AS product, event_type, event_time, price
    FROM silver_events
    WHERE {unit} IS NOT NULL AND event_type IN ('cart', 'purchase') AND {step_dates}
),
reached AS (
    -- every cart and purchase of the actor from its entry to the end of its window
    SELECT e.unit, e.held, e.product, s.event_type, s.event_time, s.price
    FROM entered AS e
    JOIN steps AS s
        ON s.unit = e.unit AND s.held IS NOT DISTINCT FROM e.held AND s.product = e.product
    WHERE s.event_time >= e.entry_time
        AND s.event_time <= e.entry_time + INTERVAL {window_seconds} SECOND
),
carted AS (
    SELECT unit, held, product, MIN(event_time) AS cart_time
    FROM reached
    WHERE event_type = 'cart'
    GROUP BY unit, held, product
),
bought AS (
    -- the first purchase at or after the cart, and the revenue of every such purchase
    SELECT r.unit, r.held, r.product, MIN(r.event_time) AS purchase_time, SUM(r.price) AS revenue
    FROM reached AS r
    JOIN carted AS c
        ON c.unit = r.unit AND c.held IS NOT DISTINCT FROM r.held AND c.product = r.product
    WHERE r.event_type = 'purchase' AND r.event_time >= c.cart_time
    GROUP BY r.unit, r.held, r.product
),
journeys AS (
    SELECT e.held, e.entry_time, c.cart_time, b.purchase_time, b.revenue
    FROM entered AS e
    LEFT JOIN carted AS c
        ON c.unit = e.unit AND c.held IS NOT DISTINCT FROM e.held AND c.product = e.product
    LEFT JOIN bought AS b
        ON b.unit = e.unit AND b.held IS NOT DISTINCT FROM e.held AND b.product = e.product
),
actors AS (
    SELECT
        held, entry_time, cart_time, purchase_time, revenue,
        DATE_DIFF('microsecond', entry_time, cart_time) / 1000000.0 AS seconds_to_cart,
        DATE_DIFF('microsecond', cart_time, purchase_time) / 1000000.0 AS seconds_to_purchase
    FROM journeys
),
funnel AS (
    SELECT
        {actor_grain} AS grain, held,
        CAST(COUNT(*) AS BIGINT) AS sessions,
        CAST(COUNT(cart_time) AS BIGINT) AS carted,
        CAST(COUNT(purchase_time) AS BIGINT) AS purchased,
        QUANTILE_CONT(seconds_to_cart, 0.5) AS median_seconds_to_cart,
        QUANTILE_CONT(seconds_to_cart, 0.9) AS p90_seconds_to_cart,
        QUANTILE_CONT(seconds_to_purchase, 0.5) AS median_seconds_cart_to_purchase,
        QUANTILE_CONT(seconds_to_purchase, 0.9) AS p90_seconds_cart_to_purchase,
        CAST(COALESCE(SUM(revenue), 0.0) AS DOUBLE) AS revenue,
        CAST(0 AS BIGINT) AS events_without_unit
    FROM actors
    GROUP BY {actor_grain}, held
),
unitless AS (
    SELECT
        {event_grain} AS grain, {held} AS held,
        CAST(0 AS BIGINT) AS sessions, CAST(0 AS BIGINT) AS carted,
        CAST(0 AS BIGINT) AS purchased,
        CAST(NULL AS DOUBLE) AS median_seconds_to_cart,
        CAST(NULL AS DOUBLE) AS p90_seconds_to_cart,
        CAST(NULL AS DOUBLE) AS median_seconds_cart_to_purchase,
        CAST(NULL AS DOUBLE) AS p90_seconds_cart_to_purchase,
        CAST(0.0 AS DOUBLE) AS revenue,
        CAST(COUNT(*) AS BIGINT) AS events_without_unit
    FROM silver_events
    WHERE {unit} IS NULL AND {entry_event_dates}
    GROUP BY {event_grain}, {held}
),
combined AS (
    SELECT
        grain, held,
        CAST(SUM(sessions) AS BIGINT) AS sessions,
        CAST(SUM(carted) AS BIGINT) AS carted,
        CAST(SUM(purchased) AS BIGINT) AS purchased,
        MAX(median_seconds_to_cart) AS median_seconds_to_cart,
        MAX(p90_seconds_to_cart) AS p90_seconds_to_cart,
        MAX(median_seconds_cart_to_purchase) AS median_seconds_cart_to_purchase,
        MAX(p90_seconds_cart_to_purchase) AS p90_seconds_cart_to_purchase,
        CAST(SUM(revenue) AS DOUBLE) AS revenue,
        CAST(SUM(events_without_unit) AS BIGINT) AS events_without_unit
    FROM (SELECT * FROM funnel UNION ALL SELECT * FROM unitless) AS both_parts
    GROUP BY grain, held
)
SELECT
    {output_columns}
    sessions, carted, purchased,
    carted / NULLIF(sessions, 0) AS view_to_cart_rate,
    purchased / NULLIF(carted, 0) AS cart_to_purchase_rate,
    purchased / NULLIF(sessions, 0) AS conversion_rate,
    (carted - purchased) / NULLIF(carted, 0) AS cart_abandonment_rate,
    median_seconds_to_cart, p90_seconds_to_cart,
    median_seconds_cart_to_purchase, p90_seconds_cart_to_purchase,
    revenue, events_without_unit AS {missing_column}
FROM combined
