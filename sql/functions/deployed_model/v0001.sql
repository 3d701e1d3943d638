-- deployed_model v0001: the orchestrator's read of the deployed model of a kind and symbol.
-- deployed_version(kind, symbol): its version string (NULL: nothing deployed).
-- deployed_model(kind, symbol): its session config and latest checkpoint (state bytes, content hash),
-- what rebuilds it (no row: nothing deployed).
-- Migration 0015 makes both SECURITY DEFINER and grants them to trainsrv_orchestrator, which reads no
-- table: the model comes back through them, as packages and predictions go in through ingest_*.
CREATE OR REPLACE FUNCTION deployed_version(p_kind text, p_symbol text)
RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT version FROM v_deployed_models WHERE model_kind = p_kind AND symbol = p_symbol $$;

CREATE OR REPLACE FUNCTION deployed_model(p_kind text, p_symbol text)
RETURNS TABLE (session_id bigint, version text, model_kind text, symbol text, config jsonb, checkpoint_id bigint,
               checkpoint_step integer, content_hash bytea, state bytea)
LANGUAGE sql STABLE
AS $$
    SELECT d.session_id, d.version, d.model_kind, d.symbol, s.config, c.id, c.step, c.content_hash, c.state
    FROM v_deployed_models d
    JOIN training_sessions s ON s.id = d.session_id
    JOIN LATERAL (
        SELECT k.id, k.step, k.content_hash, k.state FROM checkpoints k
        WHERE k.session_id = d.session_id ORDER BY k.step DESC LIMIT 1
    ) c ON true
    WHERE d.model_kind = p_kind AND d.symbol = p_symbol
$$;
