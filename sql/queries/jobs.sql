-- Job queue: enqueue, claim, heartbeat, finish / fail / release, rescue, cancel / retry, and the
-- counts the scheduler's thresholds read. Every state change after a claim checks that the row
-- is still this worker's attempt (state, locked_by and attempts), so a rescued or cancelled job
-- cannot be finished by a worker that lost it.

-- name: enqueue
-- Insert a queued job; with a dedupe key that is already queued / running, insert nothing.
INSERT INTO jobs (kind, params, priority, max_attempts, run_after, dedupe_key)
VALUES (:kind, CAST(:params AS jsonb), :priority, :max_attempts,
        now() + make_interval(secs => CAST(:delay_s AS float8)), :dedupe_key)
ON CONFLICT (dedupe_key) WHERE state IN ('queued', 'running') AND dedupe_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: enqueue_once
-- Insert a queued job unless a job with this dedupe key was ever enqueued (in any state).
INSERT INTO jobs (kind, params, priority, max_attempts, dedupe_key)
SELECT :kind, CAST(:params AS jsonb), :priority, :max_attempts, CAST(:dedupe_key AS text)
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE dedupe_key = :dedupe_key)
ON CONFLICT (dedupe_key) WHERE state IN ('queued', 'running') AND dedupe_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: active_by_dedupe_key
-- The queued or running job holding a dedupe key, if any.
SELECT id, state FROM jobs
WHERE dedupe_key = :dedupe_key AND state IN ('queued', 'running');

-- name: claim
-- Take the best ready job (priority, then age) for this worker, skipping rows others hold.
WITH next AS (
    SELECT id FROM jobs
    WHERE state = 'queued' AND run_after <= now()
    ORDER BY priority DESC, run_after, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j
SET state = 'running', locked_by = :worker, attempts = j.attempts + 1,
    started_at = now(), heartbeat_at = now(), finished_at = NULL
FROM next
WHERE j.id = next.id
RETURNING j.id, j.kind, j.params, j.attempts, j.max_attempts, j.priority, j.dedupe_key;

-- name: claim_kinds
-- Take the best ready job of one of :kinds (a lane's kinds) for this worker, skipping rows others hold.
WITH next AS (
    SELECT id FROM jobs
    WHERE state = 'queued' AND run_after <= now() AND kind = ANY(CAST(:kinds AS text[]))
    ORDER BY priority DESC, run_after, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j
SET state = 'running', locked_by = :worker, attempts = j.attempts + 1,
    started_at = now(), heartbeat_at = now(), finished_at = NULL
FROM next
WHERE j.id = next.id
RETURNING j.id, j.kind, j.params, j.attempts, j.max_attempts, j.priority, j.dedupe_key;

-- name: heartbeat
-- Mark this worker's running attempt alive; no row back means the job is no longer ours.
UPDATE jobs SET heartbeat_at = now()
WHERE id = :id AND state = 'running' AND locked_by = :worker AND attempts = :attempt
RETURNING id;

-- name: finish
-- Record success of this worker's running attempt with its result.
UPDATE jobs SET state = 'succeeded', result = CAST(:result AS jsonb), finished_at = now()
WHERE id = :id AND state = 'running' AND locked_by = :worker AND attempts = :attempt
RETURNING id;

-- name: fail
-- Record a failed attempt: re-queue with exponential backoff while attempts remain, else failed.
WITH mine AS (
    SELECT id,
           CAST(:retryable AS boolean) AND attempts < max_attempts AS retry,
           least(CAST(:backoff_max_s AS float8),
                 CAST(:backoff_base_s AS float8) * power(2, attempts - 1)) AS backoff_s
    FROM jobs
    WHERE id = :id AND state = 'running' AND locked_by = :worker AND attempts = :attempt
    FOR UPDATE
)
UPDATE jobs AS j
SET state = CASE WHEN mine.retry THEN 'queued' ELSE 'failed' END,
    run_after = CASE WHEN mine.retry THEN now() + make_interval(secs => mine.backoff_s) ELSE j.run_after END,
    locked_by = CASE WHEN mine.retry THEN NULL ELSE j.locked_by END,
    finished_at = CASE WHEN mine.retry THEN NULL ELSE now() END,
    last_error = :error
FROM mine
WHERE j.id = mine.id
RETURNING j.state, j.run_after, j.attempts, j.max_attempts;

-- name: release
-- Hand this worker's running attempt back to the queue uncounted (clean shutdown).
UPDATE jobs SET state = 'queued', locked_by = NULL, heartbeat_at = NULL, started_at = NULL,
                attempts = attempts - 1
WHERE id = :id AND state = 'running' AND locked_by = :worker AND attempts = :attempt
RETURNING id;

-- name: rescue
-- Re-queue (or fail, when out of attempts) running jobs whose worker stopped heartbeating.
WITH stale AS (
    SELECT id, locked_by, attempts < max_attempts AS retry
    FROM jobs
    WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => CAST(:timeout_s AS float8))
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j
SET state = CASE WHEN stale.retry THEN 'queued' ELSE 'failed' END,
    locked_by = CASE WHEN stale.retry THEN NULL ELSE j.locked_by END,
    finished_at = CASE WHEN stale.retry THEN NULL ELSE now() END,
    last_error = 'worker ' || stale.locked_by || ' stopped heartbeating during attempt ' || j.attempts
                 || ' (no heartbeat for ' || CAST(:timeout_s AS float8) || ' s)'
FROM stale
WHERE j.id = stale.id
RETURNING j.id, j.kind, j.state, j.attempts, stale.locked_by AS lost_by;

-- name: cancel
-- Cancel a queued or running job (a running one stops at its next heartbeat).
UPDATE jobs SET state = 'cancelled', finished_at = now()
WHERE id = :id AND state IN ('queued', 'running')
RETURNING id;

-- name: retry
-- Put a failed or cancelled job back in the queue with a fresh attempt budget.
UPDATE jobs SET state = 'queued', attempts = 0, run_after = now(), locked_by = NULL,
                heartbeat_at = NULL, started_at = NULL, finished_at = NULL, result = NULL
WHERE id = :id AND state IN ('failed', 'cancelled')
RETURNING id;

-- name: depth
-- Number of jobs per state, and how many queued ones are ready to run now.
SELECT state, count(*) AS jobs, count(*) FILTER (WHERE run_after <= now()) AS ready
FROM jobs
GROUP BY state
ORDER BY state;

-- name: new_replay_episodes_by_symbol
-- Per symbol: CNN replay episodes (v_cnn_replay, profit_r > :min_profit_r; NULL: all) validated since its last train_cnn
-- job or CNN session began.
WITH RECURSIVE symbols AS (
    -- The distinct symbols by skipping along ix_input_packages_symbol_ts (one probe per symbol, not a scan).
    (SELECT symbol FROM input_packages ORDER BY symbol LIMIT 1)
    UNION ALL
    SELECT (SELECT ip.symbol FROM input_packages ip WHERE ip.symbol > s.symbol ORDER BY ip.symbol LIMIT 1)
    FROM symbols s WHERE s.symbol IS NOT NULL
),
since AS (
    SELECT s.symbol, ls.id AS session_id, lj.id AS job_id,
           greatest(ls.started_at, lj.created_at) AS since,
           EXISTS (SELECT 1 FROM jobs a WHERE a.kind = 'train_cnn' AND a.state IN ('queued', 'running')
                   AND a.params ->> 'symbol' = s.symbol) AS active
    FROM symbols AS s
    LEFT JOIN LATERAL (
        SELECT id, started_at FROM training_sessions t
        WHERE t.model_kind = 'cnn' AND t.config ->> 'symbol' = s.symbol
        ORDER BY id DESC LIMIT 1
    ) AS ls ON true
    LEFT JOIN LATERAL (
        SELECT id, created_at FROM jobs j
        WHERE j.kind = 'train_cnn' AND j.params ->> 'symbol' = s.symbol
        ORDER BY id DESC LIMIT 1
    ) AS lj ON true
)
SELECT since.symbol, coalesce(since.session_id, 0) AS session_id, coalesce(since.job_id, 0) AS job_id, since.active,
       (SELECT count(*) FROM v_cnn_replay v
        WHERE v.symbol = since.symbol
          AND (CAST(:min_profit_r AS float8) IS NULL OR v.profit_r > CAST(:min_profit_r AS float8))
          AND (since.since IS NULL OR v.validated_at > since.since)) AS new_count
FROM since
WHERE since.symbol IS NOT NULL
ORDER BY since.symbol;

-- name: new_experiences_by_symbol
-- Per symbol: RL experiences stored since its last train_rl job or RL session began.
WITH RECURSIVE symbols AS (
    -- The distinct symbols by skipping along ix_experiences_symbol_created_at.
    (SELECT symbol FROM experiences ORDER BY symbol LIMIT 1)
    UNION ALL
    SELECT (SELECT x.symbol FROM experiences x WHERE x.symbol > s.symbol ORDER BY x.symbol LIMIT 1)
    FROM symbols s WHERE s.symbol IS NOT NULL
),
since AS (
    SELECT s.symbol, ls.id AS session_id, lj.id AS job_id,
           greatest(ls.started_at, lj.created_at) AS since,
           EXISTS (SELECT 1 FROM jobs a WHERE a.kind = 'train_rl' AND a.state IN ('queued', 'running')
                   AND a.params ->> 'symbol' = s.symbol) AS active
    FROM symbols AS s
    LEFT JOIN LATERAL (
        SELECT id, started_at FROM training_sessions t
        WHERE t.model_kind = 'rl' AND t.config ->> 'symbol' = s.symbol
        ORDER BY id DESC LIMIT 1
    ) AS ls ON true
    LEFT JOIN LATERAL (
        SELECT id, created_at FROM jobs j
        WHERE j.kind = 'train_rl' AND j.params ->> 'symbol' = s.symbol
        ORDER BY id DESC LIMIT 1
    ) AS lj ON true
)
SELECT since.symbol, coalesce(since.session_id, 0) AS session_id, coalesce(since.job_id, 0) AS job_id, since.active,
       (SELECT count(*) FROM experiences x
        WHERE x.symbol = since.symbol AND (since.since IS NULL OR x.created_at > since.since)) AS new_count
FROM since
WHERE since.symbol IS NOT NULL
ORDER BY since.symbol;
