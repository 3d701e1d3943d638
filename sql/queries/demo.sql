-- name: steps_of_job
-- How many steps the sessions of a job have recorded so far (progress display).
SELECT count(*) FROM training_steps t JOIN training_sessions s ON s.id = t.session_id WHERE s.job_id = :job_id;

-- name: session_values
-- The analyst's view of the given sessions.
SELECT session_id, model_kind, status, steps, final_loss_raw, final_loss_smoothed, best_loss_smoothed, training_value,
       eval_accuracy,
       eval_baseline_accuracy, eval_total_profit, beats_baseline, gradient_bytes, checkpoints
FROM v_session_value WHERE session_id = ANY(:ids) ORDER BY session_id;

-- name: market_range
-- First and last stored 1-minute bar of a symbol.
SELECT min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS bars
FROM candles WHERE symbol = :symbol AND timeframe = '1m';

-- name: loop_state
-- Whether the scheduled loop has caught up since :since (validation and experiences ran after it, no training pending), and failed jobs.
SELECT
    EXISTS (SELECT 1 FROM jobs WHERE kind = 'build_experiences' AND state = 'succeeded' AND started_at > (
        SELECT min(finished_at) FROM jobs WHERE kind = 'validate_outcomes' AND state = 'succeeded' AND started_at > :since))
    AND NOT EXISTS (SELECT 1 FROM jobs WHERE kind IN ('train_cnn', 'train_rl') AND state IN ('queued', 'running'))
    AND NOT EXISTS (SELECT 1 FROM jobs WHERE kind IN ('train_cnn', 'train_rl') AND created_at > (
        SELECT max(started_at) FROM jobs WHERE kind = 'build_experiences' AND state = 'succeeded'))
        AS settled,
    (SELECT count(*) FROM jobs WHERE state = 'failed') AS failed;

-- name: loop_jobs
-- The finished jobs of the loop's stages, oldest first, with their results.
SELECT id, kind, started_at, finished_at, result
FROM jobs
WHERE kind = ANY(CAST(:kinds AS text[])) AND state = 'succeeded'
ORDER BY id;

-- name: loop_sessions
-- The sessions the loop's training jobs created.
SELECT s.id FROM training_sessions s JOIN jobs j ON j.id = s.job_id
WHERE j.kind IN ('train_cnn', 'train_rl') ORDER BY s.id;

-- name: newest_session
-- The newest succeeded session of a model kind.
SELECT id FROM training_sessions WHERE model_kind = :model_kind AND status = 'succeeded' ORDER BY id DESC LIMIT 1;
