-- v_rl_episodes v0001: the RL agent's evaluation episodes — a valid input package with a validated
-- outcome of an RL prediction (episode_id = prediction id), with the columns of v_cnn_replay that an
-- evaluation reads. The greedy policy's call on the package is scored against the realised move
-- (price_return) and the optimal action, exactly as the CNN's calls are on v_cnn_replay (v0002 holds
-- CNN predictions only). horizon_end: when the outcome's last candle closed.
CREATE VIEW v_rl_episodes AS
SELECT p.id AS episode_id,
       p.package_id,
       ip.symbol,
       ip.ts,
       p.predicted_at + make_interval(secs => p.horizon_s) AS horizon_end,
       o.optimal_action,
       100.0 * o.price_return AS move_pct,
       o.price_return,
       o.actual_profit,
       o.profitability_score,
       o.is_profitable,
       ip.is_premium,
       o.times_trained,
       0.0::float8 AS training_priority
FROM outcomes o
JOIN predictions p ON p.id = o.prediction_id
JOIN input_packages ip ON ip.id = p.package_id
WHERE p.model_kind = 'rl' AND o.status = 'validated' AND ip.is_valid AND o.price_return IS NOT NULL;
