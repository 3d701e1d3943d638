-- name: steps_of_job
-- How many steps the sessions of a job have recorded so far (progress display).
SELECT count(*) FROM training_steps t JOIN training_sessions s ON s.id = t.session_id WHERE s.job_id = :job_id;

-- name: session_values
-- The analyst's view of the given sessions.
SELECT session_id, model_kind, status, steps, final_loss, best_loss, training_value, eval_accuracy,
       eval_baseline_accuracy, eval_total_profit, beats_baseline, gradient_bytes, checkpoints
FROM v_session_value WHERE session_id = ANY(:ids) ORDER BY session_id;

-- name: market_range
-- First and last stored 1-minute bar of a symbol.
SELECT min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS bars
FROM candles WHERE symbol = :symbol AND timeframe = '1m';
