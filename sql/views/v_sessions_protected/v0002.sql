-- v_sessions_protected v0002 (migration 0015): the retention keep rule with the model registry in it.
-- Changed from v0001: every session the registry ever deployed (a promotion or a rollback in
-- model_deployments, so any model a rollback can return to) is a root, reason 'deployed', and a session's
-- warm-start origin (init_session_id, the session whose checkpoint its weights started from) is one more
-- lineage edge. Everything else is as v0001 says (roots: marked keep, running, replay running; lineage
-- through replay sources and replay-onto targets).
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
    UNION ALL
    SELECT DISTINCT session_id, 'deployed' FROM model_deployments WHERE action IN ('promote', 'rollback')
),
edges(child_id, parent_id) AS (
    SELECT id, parent_session_id FROM training_sessions WHERE parent_session_id IS NOT NULL
    UNION
    SELECT id, init_session_id FROM training_sessions WHERE init_session_id IS NOT NULL
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
