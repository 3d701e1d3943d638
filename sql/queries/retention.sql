-- Retention of gradients and checkpoints (app/retention, `trainsrv gc`). What must never be pruned is
-- v_sessions_protected; these queries read it, they do not repeat it.

-- name: sessions
-- Every session with what retention decides from: protection reasons, rank among the newest of its
-- (model kind, symbol), age since it ended, and the bytes of its gradient partition and checkpoints.
WITH protected AS (
    SELECT session_id, string_agg(DISTINCT reason, '; ' ORDER BY reason) AS reasons
    FROM v_sessions_protected
    GROUP BY session_id
),
stored AS (
    SELECT session_id, sum(byte_length)::bigint AS checkpoint_bytes, count(*) AS checkpoints
    FROM checkpoints
    GROUP BY session_id
)
SELECT t.id AS session_id, t.model_kind, t.config ->> 'symbol' AS symbol, t.status, t.keep, t.pruned,
       t.started_at,
       extract(epoch FROM now() - coalesce(t.ended_at, t.started_at)) / 86400.0 AS age_days,
       row_number() OVER (PARTITION BY t.model_kind, t.config ->> 'symbol'
                          ORDER BY t.started_at DESC, t.id DESC) AS newest_rank,
       gradient_blobs_session_bytes(t.id) AS gradient_bytes,
       coalesce(s.checkpoint_bytes, 0) AS checkpoint_bytes,
       coalesce(s.checkpoints, 0) AS checkpoints,
       p.reasons AS protected
FROM training_sessions t
LEFT JOIN protected p ON p.session_id = t.id
LEFT JOIN stored s ON s.session_id = t.id
ORDER BY t.started_at, t.id;

-- name: lock_for_pruning
-- In gc's transaction: the replay lock (29780) and the trainer's session lock (29779), exclusively, without
-- waiting; false when a replay or a trainer holds either (gc then skips the session).
SELECT pg_try_advisory_xact_lock(29780, (:session_id % 2147483647)::int4)
   AND pg_try_advisory_xact_lock(29779, (:session_id % 2147483647)::int4) AS locked;

-- name: protection
-- Why the session must be kept, re-read inside gc's transaction once its locks are held (NULL: prunable).
SELECT string_agg(DISTINCT reason, '; ' ORDER BY reason) AS reasons
FROM v_sessions_protected
WHERE session_id = :session_id;

-- name: lock_session_row
-- The session row, locked for gc's update (a concurrent keep waits for it).
SELECT id, pruned FROM training_sessions WHERE id = :session_id FOR UPDATE;

-- name: drop_gradients
-- Detach and drop the session's gradient partition; the bytes freed.
SELECT gradient_blobs_drop_partition(:session_id) AS freed;

-- name: delete_checkpoints
-- Delete the session's checkpoints (retention 'all'); the bytes of their states.
WITH gone AS (DELETE FROM checkpoints WHERE session_id = :session_id RETURNING byte_length)
SELECT coalesce(sum(byte_length), 0)::bigint AS freed FROM gone;

-- name: mark_pruned
-- Record what retention removed: the session is no longer replay-exact, and says why.
UPDATE training_sessions
SET replay_exact = false, pruned = :pruned, pruned_at = now(), pruned_reason = :reason
WHERE id = :session_id;

-- name: lock_for_reading
-- Held by a process replaying a session (shared: many replays at once); gc prunes nothing while it is held.
SELECT pg_advisory_lock_shared(29780, (:session_id % 2147483647)::int4);

-- name: unlock_for_reading
-- Release lock_for_reading (pooled connections outlive the replay).
SELECT pg_advisory_unlock_shared(29780, (:session_id % 2147483647)::int4);

-- name: set_keep
-- Mark a session keep (never pruned, nor its lineage) or clear the mark; the row, or none for an unknown id.
UPDATE training_sessions SET keep = :keep WHERE id = :session_id RETURNING id, keep, pruned;

-- name: pruned_sessions
-- Sessions whose gradients (or gradients and checkpoints) retention removed (:session_id NULL: all).
SELECT id AS session_id, pruned, pruned_at, pruned_reason
FROM training_sessions
WHERE pruned IS NOT NULL
  AND (CAST(:session_id AS bigint) IS NULL OR id = CAST(:session_id AS bigint))
ORDER BY id;

-- name: gradient_bytes
-- Bytes of all gradient partitions together (the figure the budget limits).
SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint AS total
FROM pg_partition_tree('gradient_blobs')
WHERE isleaf;

-- name: set_lock_timeout
-- For the rest of gc's transaction: give up on a lock not granted within :ms (e.g. '2000ms').
SELECT set_config('lock_timeout', :ms, true);
