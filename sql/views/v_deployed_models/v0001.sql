-- v_deployed_models v0001: the model deployed per (model_kind, symbol): the newest promotion or
-- rollback in model_deployments (refusals change nothing).
CREATE VIEW v_deployed_models AS
SELECT DISTINCT ON (d.model_kind, d.symbol)
       d.model_kind,
       d.symbol,
       d.session_id,
       model_version(d.model_kind, d.session_id) AS version,
       d.id AS deployment_id,
       d.action,
       d.decided_at AS deployed_at,
       d.previous_session_id
FROM model_deployments d
WHERE d.action IN ('promote', 'rollback')
ORDER BY d.model_kind, d.symbol, d.id DESC;
