-- name: similar_setups
-- The k most similar earlier valid setups of the same symbol, with their outcomes.
SELECT package_id, symbol, ts, distance, is_premium, validated_outcomes, mean_profit, win_rate
FROM similar_setups(:package_id, :k);

-- name: similar_setups_summary
-- Aggregate over the k most similar setups: win rate and mean profit.
SELECT neighbours, validated_outcomes, win_rate, mean_profit, mean_distance
FROM similar_setups_summary(:package_id, :k);

-- name: report_session
-- One training session's header for its report.
SELECT id, model_kind, model_name, status, capture_policy, replay_exact, seed, device, torch_version,
       started_at, ended_at, best_loss, converged, training_value, metrics, config
FROM training_sessions WHERE id = :session_id;

-- name: report_steps
-- A session's steps in order, with the figures its report plots.
SELECT step, loss_total, loss_components, grad_norm, learning_rate, batch_profitability
FROM training_steps WHERE session_id = :session_id ORDER BY step;
