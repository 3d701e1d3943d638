-- name: queue_depth
-- Jobs per state and kind (every state, so a drained queue reads 0 rather than disappearing).
SELECT state, kind, count(*) AS jobs FROM jobs GROUP BY state, kind;

-- name: validation_lag
-- Age in seconds of the oldest prediction whose horizon has passed and whose outcome is not validated yet (0: none).
SELECT coalesce(extract(epoch FROM now() - min(p.predicted_at + make_interval(secs => p.horizon_s))), 0) AS lag_s
FROM predictions p
LEFT JOIN outcomes o ON o.prediction_id = p.id
WHERE (o.prediction_id IS NULL OR o.status = 'pending')
  AND p.predicted_at + make_interval(secs => p.horizon_s) <= now();
