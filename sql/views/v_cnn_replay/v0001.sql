-- v_cnn_replay v0001: CNN training episodes — a valid input package with a validated outcome —
-- ranked by training_priority. One row per validated prediction (episode_id = prediction id).
--
--   recency           = exp(-(newest package ts of the symbol - package ts) / 7 days)   in (0, 1]
--   training_priority = (0.6 * profitability_score + 0.2 * premium + 0.2 * recency)
--                       / (1 + times_trained)
--
-- premium is 1 for packages inside a rapid-change event (input_packages.is_premium), else 0.
-- Recency is measured against the symbol's newest episode, not the wall clock, so historical
-- data ranks the same whenever it is read. Every training pass over an episode (times_trained)
-- divides its priority, so repeated sessions move on to episodes they have not seen yet.
-- move_pct is the realised price move over the horizon in percent (the regression target);
-- horizon_end is when the outcome's last candle closed: a later evaluation slice must start
-- after the horizon_end of every training episode.
CREATE VIEW v_cnn_replay AS
WITH episodes AS (
    SELECT o.prediction_id AS episode_id,
           p.package_id,
           ip.symbol,
           ip.ts,
           p.predicted_at,
           p.horizon_s,
           p.predicted_at + make_interval(secs => p.horizon_s) AS horizon_end,
           o.optimal_action,
           o.price_return,
           100.0 * o.price_return AS move_pct,
           o.actual_profit,
           o.profitability_score,
           o.is_profitable,
           ip.is_premium,
           o.times_trained,
           o.last_trained_at,
           o.validated_at,
           exp(-extract(epoch FROM max(ip.ts) OVER (PARTITION BY ip.symbol) - ip.ts)::float8 / 604800.0) AS recency
    FROM outcomes o
    JOIN predictions p ON p.id = o.prediction_id
    JOIN input_packages ip ON ip.id = p.package_id
    WHERE o.status = 'validated' AND ip.is_valid AND o.price_return IS NOT NULL
)
SELECT e.*,
       (0.6 * e.profitability_score + 0.2 * (CASE WHEN e.is_premium THEN 1 ELSE 0 END) + 0.2 * e.recency)
           / (1 + e.times_trained) AS training_priority
FROM episodes e;
