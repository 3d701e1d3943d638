-- v_model_lineage v0001: every session's lineage, one row per member. depth 0 is the session itself
-- with its latest checkpoint (for a succeeded session, the model it produced); depth k + 1 is the
-- session that depth k was initialised from (--init), with the checkpoint it was initialised from.
-- What must be kept for a model to stay explainable and its evaluation checkable:
--   SELECT l.* FROM v_deployed_models d JOIN v_model_lineage l ON l.model_session_id = d.session_id;
-- trained_through: the latest data the member trained on (model_contamination compares it with a slice).
CREATE VIEW v_model_lineage AS
WITH RECURSIVE lineage AS (
    SELECT s.id AS model_session_id,
           0 AS depth,
           s.id AS session_id,
           (SELECT c.id FROM checkpoints c WHERE c.session_id = s.id ORDER BY c.step DESC LIMIT 1) AS checkpoint_id,
           s.init_session_id AS from_session_id,
           s.init_checkpoint_id AS from_checkpoint_id
    FROM training_sessions s
    UNION ALL
    SELECT l.model_session_id, l.depth + 1, a.id, l.from_checkpoint_id, a.init_session_id, a.init_checkpoint_id
    FROM lineage l
    JOIN training_sessions a ON a.id = l.from_session_id
)
SELECT l.model_session_id,
       l.depth,
       l.session_id,
       l.checkpoint_id,
       s.model_kind,
       s.config ->> 'symbol' AS symbol,
       s.status,
       s.trained_through
FROM lineage l
JOIN training_sessions s ON s.id = l.session_id;
