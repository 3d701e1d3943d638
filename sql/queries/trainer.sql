-- name: copy_gradient_blobs
-- Binary COPY of gradient chunks (the background writer streams rows into it).
COPY gradient_blobs (session_id, step, param_name, chunk_index, chunk_count, dtype, shape, codec,
                     byte_length, checksum, data) FROM STDIN (FORMAT BINARY);

-- name: try_lock_session
-- Session-level advisory lock held by the process training a session (released when it dies).
SELECT pg_try_advisory_lock(29779, (:session_id % 2147483647)::int4);

-- name: mark_resumed
-- Reopen a session for training, counting resumes and the steps discarded after its last checkpoint.
UPDATE training_sessions
SET status = 'running',
    error = NULL,
    ended_at = NULL,
    metrics = metrics || jsonb_build_object(
        'resumes', coalesce((metrics ->> 'resumes')::int, 0) + 1,
        'discarded_steps', coalesce((metrics ->> 'discarded_steps')::int, 0) + :dropped,
        'resumed_from_step', :step)
WHERE id = :session_id;

-- name: eval_cutoff
-- Start of the evaluation slice: the package time below which (1 - :eval_fraction) of a symbol's episodes lie.
SELECT percentile_disc(1 - CAST(:eval_fraction AS float8)) WITHIN GROUP (ORDER BY ts) AS cutoff,
       count(*) AS episodes
FROM v_cnn_replay
WHERE symbol = :symbol;

-- name: training_episodes
-- Episodes above the replay thresholds (or, with :keep_holds, whose optimal action was hold) whose outcome horizon
-- ended before the evaluation slice; the :max_episodes highest-priority ones (NULL: all).
SELECT episode_id, package_id, symbol, ts, horizon_end, optimal_action, move_pct, price_return,
       actual_profit, profitability_score, is_profitable, is_premium, times_trained, training_priority
FROM v_cnn_replay
WHERE symbol = :symbol
  AND horizon_end <= :cutoff
  AND ((profitability_score >= :min_profitability
        AND (CAST(:min_profit_r AS float8) IS NULL OR profit_r > :min_profit_r))
       OR (CAST(:keep_holds AS boolean) AND optimal_action = 'hold'))
ORDER BY training_priority DESC, episode_id
LIMIT CAST(:max_episodes AS bigint);

-- name: evaluation_episodes
-- Every episode of the evaluation slice (package time at or after the cutoff), oldest first.
SELECT episode_id, package_id, symbol, ts, horizon_end, optimal_action, move_pct, price_return,
       actual_profit, profitability_score, is_profitable, is_premium, times_trained, training_priority
FROM v_cnn_replay
WHERE symbol = :symbol AND ts >= :cutoff
ORDER BY ts, episode_id;

-- name: episodes_by_id
-- Episodes by id (a resumed session reloads exactly the episodes it started with).
SELECT episode_id, package_id, symbol, ts, horizon_end, optimal_action, move_pct, price_return,
       actual_profit, profitability_score, is_profitable, is_premium, times_trained, training_priority
FROM v_cnn_replay
WHERE episode_id = ANY(CAST(:ids AS bigint[]));

-- name: mark_trained
-- Count how often each episode was in a batch of the session's steps in (:from_step, :to_step].
UPDATE outcomes o
SET times_trained = o.times_trained + u.uses,
    last_trained_at = now()
FROM (
    SELECT id, count(*) AS uses
    FROM training_steps s, unnest(s.batch_ids) AS id
    WHERE s.session_id = :session_id AND s.step > :from_step AND s.step <= :to_step
    GROUP BY id
) u
WHERE o.prediction_id = u.id;

-- name: package_payloads
-- Stored payloads and hashes of input packages (decoded and hash-verified by app.ingest.package).
SELECT id, payload, data_hash
FROM input_packages
WHERE id = ANY(CAST(:ids AS bigint[]));

-- name: unlock_session
-- Release the advisory lock taken by try_lock_session (pooled connections outlive the trainer).
SELECT pg_advisory_unlock(29779, (:session_id % 2147483647)::int4);

-- name: async_commit
-- On the writer's private connection: its transactions commit without waiting for the WAL flush.
SET synchronous_commit = off;

-- name: copy_training_steps
-- Binary COPY of step rows (the background writer sends a batch's steps in one statement).
COPY training_steps (session_id, step, loss_total, loss_components, grad_norm, learning_rate, batch_ids,
                     batch_profitability, timings_ms, gradients_stored) FROM STDIN (FORMAT BINARY);
