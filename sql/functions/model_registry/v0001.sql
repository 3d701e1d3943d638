-- model_registry v0001: the model registry's SQL functions (migration 0015, docs/models.md).
--
-- model_version(kind, session_id): the version string of a trained model, the one place it is formed;
--   predictions made with a deployed model carry it in predictions.model_version.
-- session_trained_through(session_id): the latest time any item a session trained on depends on (a CNN
--   episode's label horizon end; an RL experience's horizon end or next state), from its recorded steps.
-- model_contamination(session_id, slice_start): the members of the session's lineage (itself, the session
--   it was initialised from, and so on) that trained on data ending after slice_start, or whose
--   trained_through is unknown. No row: an evaluation slice starting at slice_start is clean.
-- model_deployments_notify(): trigger; NOTIFY trainsrv_models with the new deployment of a promotion or
--   rollback, in the deciding transaction (listeners see it only once it is committed).
CREATE OR REPLACE FUNCTION model_version(p_kind text, p_session_id bigint)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT p_kind || '-s' || p_session_id $$;

CREATE OR REPLACE FUNCTION session_trained_through(p_session_id bigint)
RETURNS timestamptz
LANGUAGE sql STABLE
AS $$
    SELECT max(d.data_end)
    FROM training_sessions s
    JOIN LATERAL (
        SELECT DISTINCT id FROM training_steps t, unnest(t.batch_ids) AS id WHERE t.session_id = s.id
    ) used ON true
    JOIN v_training_data_end d ON d.model_kind = s.model_kind AND d.item_id = used.id
    WHERE s.id = p_session_id
$$;

CREATE OR REPLACE FUNCTION model_contamination(p_session_id bigint, p_slice_start timestamptz)
RETURNS TABLE (session_id bigint, depth integer, trained_through timestamptz)
LANGUAGE sql STABLE
AS $$
    WITH RECURSIVE lineage AS (
        SELECT s.id, 0 AS depth, s.init_session_id FROM training_sessions s WHERE s.id = p_session_id
        UNION ALL
        SELECT a.id, l.depth + 1, a.init_session_id
        FROM lineage l JOIN training_sessions a ON a.id = l.init_session_id
    )
    SELECT l.id, l.depth, s.trained_through
    FROM lineage l JOIN training_sessions s ON s.id = l.id
    WHERE s.trained_through IS NULL OR s.trained_through > p_slice_start
    ORDER BY l.depth
$$;

CREATE OR REPLACE FUNCTION model_deployments_notify()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('trainsrv_models', json_build_object(
        'action', NEW.action, 'model_kind', NEW.model_kind, 'symbol', NEW.symbol,
        'session_id', NEW.session_id, 'version', model_version(NEW.model_kind, NEW.session_id),
        'previous_session_id', NEW.previous_session_id, 'deployment_id', NEW.id)::text);
    RETURN NULL;
END
$$;
