-- v_sessions_protected v0001 (migration 0013): THE rule of what retention (`trainsrv gc`) must never prune.
-- One row per (session, reason); a session may be listed for several reasons. Everything else is policy
-- (newest N per kind and symbol, age, storage budget: app/retention) and may be pruned.
--
-- Roots:
--   * 'marked keep'   training_sessions.keep (`trainsrv gc keep SESSION`);
--   * 'running'       status = 'running': being trained or replayed onto a checkpoint now, or killed and
--                     resumable (its next steps are written to its partition);
--   * 'replay running' a process replaying it holds the shared advisory lock (29780, id)
--                     (app/retention/locks.py); gc takes the same lock exclusively before pruning.
-- Lineage: every ancestor of a root, through parent_session_id (the source session a replay onto a
-- checkpoint applied) and config.replay.onto_session_id (the session whose checkpoint it started from),
-- transitively, with reason 'lineage of session N (<root reason>)'.
--
-- A model registry extends this view with one new version: its deployed sessions become roots
-- ('deployed'), and its parent / init checkpoint column another lineage edge.
CREATE VIEW v_sessions_protected AS
WITH RECURSIVE roots(session_id, reason) AS (
    SELECT id, 'marked keep' FROM training_sessions WHERE keep
    UNION ALL
    SELECT id, 'running' FROM training_sessions WHERE status = 'running'
    UNION ALL
    SELECT DISTINCT l.objid::bigint, 'replay running'
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.classid = 29780 AND l.objsubid = 2 AND l.mode = 'ShareLock'
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
),
edges(child_id, parent_id) AS (
    SELECT id, parent_session_id FROM training_sessions WHERE parent_session_id IS NOT NULL
    UNION
    SELECT id, (config -> 'replay' ->> 'onto_session_id')::bigint
    FROM training_sessions WHERE config -> 'replay' ->> 'onto_session_id' IS NOT NULL
),
lineage(session_id, root_id, root_reason) AS (
    SELECT session_id, session_id, reason FROM roots
    UNION
    SELECT e.parent_id, l.root_id, l.root_reason
    FROM lineage l
    JOIN edges e ON e.child_id = l.session_id
)
SELECT l.session_id,
       CASE WHEN l.session_id = l.root_id THEN l.root_reason
            ELSE format('lineage of session %s (%s)', l.root_id, l.root_reason) END AS reason
FROM lineage l
JOIN training_sessions t ON t.id = l.session_id;
