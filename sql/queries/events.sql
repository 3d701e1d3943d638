-- Rapid price-change detection (app/events). Definitions and units: docs/outcomes.md.

-- name: detect
-- Detect velocity and volatility-spike events over the candles of :timeframe, replace the stored ones, mark packages premium.
WITH bars AS (
    SELECT symbol, ts, close,
           lag(close, CAST(:vel_bars AS integer)) OVER w AS ref_close,
           lag(ts, CAST(:vel_bars AS integer)) OVER w AS ref_ts,
           lag(close) OVER w AS prev_close,
           lag(ts) OVER w AS prev_ts,
           row_number() OVER w AS rn
    FROM candles
    WHERE timeframe = :timeframe AND (CAST(:symbol AS text) IS NULL OR symbol = :symbol)
    WINDOW w AS (PARTITION BY symbol ORDER BY ts)
),
moves AS (
    -- Only across contiguous bars: a gap in the candles yields no velocity and no return.
    SELECT symbol, ts, rn,
           CASE WHEN ref_ts = ts - make_interval(secs => :vel_bars * :bar_s)
                THEN 100 * (close / ref_close - 1) / :vel_window_min END AS velocity,
           CASE WHEN prev_ts = ts - make_interval(secs => :bar_s) THEN ln(close / prev_close) END AS r
    FROM bars
),
realised AS (
    SELECT symbol, ts, rn, velocity, r,
           CASE WHEN count(r) OVER v = :vol_bars THEN stddev_samp(r) OVER v END AS rv
    FROM moves
    WINDOW v AS (PARTITION BY symbol ORDER BY ts ROWS BETWEEN CAST(:vol_bars AS integer) - 1 PRECEDING AND CURRENT ROW)
),
baselined AS (
    -- The adaptive baseline: EWMA of realised volatility up to and including each bar.
    SELECT symbol, ts, rn, velocity, r, rv,
           trainsrv_ewma(rv, CAST(:alpha AS float8)) OVER b AS baseline,
           count(rv) OVER b AS baseline_n
    FROM realised
    WINDOW b AS (PARTITION BY symbol ORDER BY ts ROWS UNBOUNDED PRECEDING)
),
flagged AS (
    SELECT m.symbol, 'velocity' AS kind, m.ts, m.rn, sign(m.velocity)::int AS direction, abs(m.velocity) AS strength,
           m.r, coalesce(t.threshold, :velocity_threshold) AS threshold
    FROM baselined m
    LEFT JOIN unnest(CAST(:threshold_symbols AS text[]), CAST(:threshold_values AS float8[])) AS t(symbol, threshold)
           ON t.symbol = m.symbol
    WHERE abs(m.velocity) >= coalesce(t.threshold, :velocity_threshold)
    UNION ALL
    -- A spike is judged against the baseline before the bar, so a spike cannot mask itself.
    SELECT symbol, 'volatility_spike', ts, rn, 0, rv / prev_baseline, r, :multiplier
    FROM (SELECT *, lag(baseline) OVER (PARTITION BY symbol ORDER BY ts) AS prev_baseline,
                    lag(baseline_n) OVER (PARTITION BY symbol ORDER BY ts) AS prev_n
          FROM baselined) s
    WHERE prev_n >= :warmup_bars AND prev_baseline > 0 AND rv > :multiplier * prev_baseline
),
islands AS (
    -- Consecutive flagged bars of one kind and direction form one event (gaps-and-islands).
    SELECT *, rn - row_number() OVER (PARTITION BY symbol, kind, direction ORDER BY ts) AS island
    FROM flagged
),
events AS (
    SELECT symbol, kind,
           -- velocity: from the open of the first bar in the window; spike: from the first spiking bar
           min(ts) - CASE WHEN kind = 'velocity' THEN make_interval(secs => (:vel_bars - 1) * :bar_s)
                          ELSE interval '0' END AS started_at,
           max(ts) + make_interval(secs => :bar_s) AS ended_at,
           -- the close of the first flagged bar: before it the event was not visible yet
           min(ts) + make_interval(secs => :bar_s) AS known_at,
           max(strength) AS magnitude,
           CASE WHEN kind = 'velocity' THEN min(direction) ELSE sign(sum(r))::int END AS direction,
           jsonb_build_object('threshold', min(threshold), 'bars', count(*),
                              'window_bars', CASE WHEN kind = 'velocity' THEN :vel_bars ELSE :vol_bars END,
                              'alpha', CASE WHEN kind = 'velocity' THEN NULL ELSE :alpha END) AS params
    FROM islands
    GROUP BY symbol, kind, direction, island
),
stale AS (
    DELETE FROM market_events m
    WHERE m.timeframe = :timeframe AND (CAST(:symbol AS text) IS NULL OR m.symbol = :symbol)
      AND NOT EXISTS (SELECT 1 FROM events e
                      WHERE e.symbol = m.symbol AND e.kind = m.kind AND e.started_at = m.started_at)
    RETURNING 1
),
written AS (
    INSERT INTO market_events AS m (symbol, timeframe, kind, started_at, ended_at, known_at, magnitude, direction,
                                    params)
    SELECT symbol, :timeframe, kind, started_at, ended_at, known_at, magnitude, direction, params FROM events
    ON CONFLICT (symbol, timeframe, kind, started_at) DO UPDATE SET
        ended_at = EXCLUDED.ended_at, known_at = EXCLUDED.known_at, magnitude = EXCLUDED.magnitude,
        direction = EXCLUDED.direction, params = EXCLUDED.params, detected_at = now()
    WHERE (m.ended_at, m.known_at, m.magnitude, m.direction, m.params)
          IS DISTINCT FROM (EXCLUDED.ended_at, EXCLUDED.known_at, EXCLUDED.magnitude, EXCLUDED.direction,
                            EXCLUDED.params)
    RETURNING (xmax = 0) AS inserted
),
premium AS (
    -- Packages captured inside an event once it was visible (from the close of its first flagged bar) are
    -- premium; earlier ones in its window are not: their mark would use bars after the package time.
    -- (Never un-marked here: others may mark them too.)
    UPDATE input_packages p SET is_premium = true
    FROM events e
    WHERE p.symbol = e.symbol AND p.ts >= e.known_at AND p.ts <= e.ended_at AND NOT p.is_premium
    RETURNING 1
)
SELECT (SELECT count(*) FROM events) AS found,
       (SELECT count(*) FILTER (WHERE kind = 'velocity') FROM events) AS velocity,
       (SELECT count(*) FILTER (WHERE kind = 'volatility_spike') FROM events) AS volatility_spike,
       (SELECT count(*) FILTER (WHERE inserted) FROM written) AS inserted,
       (SELECT count(*) FILTER (WHERE NOT inserted) FROM written) AS updated,
       (SELECT count(*) FROM stale) AS deleted,
       (SELECT count(*) FROM premium) AS premium_marked;

-- name: lock_detection
-- Serialise detection runs over the same series; held to commit.
SELECT pg_advisory_xact_lock(hashtext('trainsrv.events.detect'));

-- name: largest
-- The strongest stored events of each kind (magnitudes of different kinds are not comparable).
SELECT symbol, kind, started_at, ended_at, magnitude, direction
FROM (SELECT *, row_number() OVER (PARTITION BY kind ORDER BY magnitude DESC) AS place
      FROM market_events
      WHERE CAST(:symbol AS text) IS NULL OR symbol = :symbol) ranked
WHERE place <= :limit
ORDER BY kind, magnitude DESC;
