-- v_leakage_audit v0001: rows that must not exist. Empty means no look-ahead was found; `trainsrv audit`
-- fails when it has rows, and the walk-forward experiment records each lane's count.
--
--   training_after_evaluation   a succeeded session's evaluation slice (config.eval_cutoff) starts before
--                               the end of the data some member of its lineage (itself, the session it was
--                               warm-started from, and so on) trained on (trained_through), or that end is
--                               unknown: its evaluation saw data a parent learned from.
--   package_after_prediction    a prediction made before the time of the package it was made on.
--   outcome_not_after_prediction a validated outcome whose entry price is not the open of a stored bar that
--                               opens strictly after the prediction and before its horizon end.
--   premium_before_event_known  a premium package captured before the close of the first bar that
--                               flagged every event it lies in (market_events.known_at): the mark used
--                               bars after the package time.
CREATE VIEW v_leakage_audit AS
WITH RECURSIVE evaluated AS (
    SELECT s.id AS session_id, CAST(s.config ->> 'eval_cutoff' AS timestamptz) AS slice_start
    FROM training_sessions s
    WHERE s.status = 'succeeded' AND s.config ? 'eval_cutoff'
),
lineage AS (
    SELECT e.session_id, e.slice_start, s.id AS member_id, 0 AS depth, s.init_session_id
    FROM evaluated e JOIN training_sessions s ON s.id = e.session_id
    UNION ALL
    SELECT l.session_id, l.slice_start, a.id, l.depth + 1, a.init_session_id
    FROM lineage l JOIN training_sessions a ON a.id = l.init_session_id
)
SELECT 'training_after_evaluation'::text AS check_name, l.session_id, l.member_id AS item_id,
       format('lineage member %s (depth %s) trained on data through %s; the evaluation slice starts %s',
              l.member_id, l.depth, coalesce(m.trained_through::text, 'an unknown time'), l.slice_start) AS detail
FROM lineage l
JOIN training_sessions m ON m.id = l.member_id
WHERE m.trained_through IS NULL OR m.trained_through > l.slice_start
UNION ALL
SELECT 'package_after_prediction', NULL, p.id,
       format('prediction at %s on package %s of %s', p.predicted_at, ip.id, ip.ts)
FROM predictions p
JOIN input_packages ip ON ip.id = p.package_id
WHERE ip.ts > p.predicted_at
UNION ALL
SELECT 'outcome_not_after_prediction', NULL, o.prediction_id,
       format('entry price %s is not the open of a bar after %s', o.entry_price, p.predicted_at)
FROM outcomes o
JOIN predictions p ON p.id = o.prediction_id
JOIN input_packages ip ON ip.id = p.package_id
WHERE o.status = 'validated'
  AND NOT EXISTS (SELECT 1 FROM candles c
                  WHERE c.symbol = ip.symbol AND c.ts > p.predicted_at
                    AND c.ts < p.predicted_at + make_interval(secs => p.horizon_s)
                    AND c.open = o.entry_price)
UNION ALL
SELECT 'premium_before_event_known', NULL, ip.id,
       format('package of %s is premium but no event containing it was known by then', ip.ts)
FROM input_packages ip
WHERE ip.is_premium
  AND EXISTS (SELECT 1 FROM market_events e
              WHERE e.symbol = ip.symbol AND ip.ts BETWEEN e.started_at AND e.ended_at)
  AND NOT EXISTS (SELECT 1 FROM market_events e
                  WHERE e.symbol = ip.symbol AND ip.ts BETWEEN e.started_at AND e.ended_at
                    AND (e.known_at IS NULL OR e.known_at <= ip.ts));
