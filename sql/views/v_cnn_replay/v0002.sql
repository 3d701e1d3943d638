-- v_cnn_replay v0002: CNN training episodes — a valid input package with a validated outcome of
-- a CNN prediction — ranked by training_priority. One row per validated CNN prediction
-- (episode_id = prediction id). v0001 took every model kind's predictions, so a package that
-- the CNN and the RL agent both called was two episodes and its profit counted twice.
--
--   recency           = exp(-(newest package ts of the symbol - package ts) / 7 days)   in (0, 1]
--   training_priority = (0.6 * profitability_score + 0.2 * premium + 0.2 * recency)
--                       / (1 + times_trained)
--   profit_r          = actual_profit / risk, the call's profit after costs in units of its risk
--                       (risk = max(adverse excursion, round-trip cost, 1 bp), as in the score:
--                       profitability_score = 1 / (1 + exp(-profit_r)), so profit_r = logit(score)).
--                       0 is break-even: profit_r > 0 exactly when the call was profitable
--                       (is_profitable); a hold is 0; 1 is a gain of one unit of risk ("1R").
--
-- The replay threshold (settings.min_profit_r_for_replay, train_cnn's min_profit_r) is on the
-- profit_r scale: an episode is used when profit_r > threshold, so the default 0 trains on
-- profitable calls only. (profitability_score keeps its 0..1 scale for ranking: 0.5 is break
-- even there, and a loss still scores up to 0.5.)
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
           exp(-extract(epoch FROM max(ip.ts) OVER (PARTITION BY ip.symbol) - ip.ts)::float8 / 604800.0) AS recency,
           CASE WHEN o.profitability_score >= 1 THEN 'Infinity'::float8
                WHEN o.profitability_score <= 0 THEN '-Infinity'::float8
                ELSE ln(o.profitability_score / (1 - o.profitability_score)) END AS profit_r
    FROM outcomes o
    JOIN predictions p ON p.id = o.prediction_id
    JOIN input_packages ip ON ip.id = p.package_id
    WHERE o.status = 'validated' AND ip.is_valid AND o.price_return IS NOT NULL AND p.model_kind = 'cnn'
)
SELECT e.*,
       (0.6 * e.profitability_score + 0.2 * (CASE WHEN e.is_premium THEN 1 ELSE 0 END) + 0.2 * e.recency)
           / (1 + e.times_trained) AS training_priority
FROM episodes e;
