-- name: deployed
-- The model deployed for a kind and symbol (no row: none).
SELECT session_id, version, deployment_id, deployed_at, previous_session_id
FROM v_deployed_models
WHERE model_kind = :model_kind AND symbol = :symbol;

-- name: model
-- One registry entry (a succeeded CNN / RL training session) with its lineage and evaluation.
SELECT * FROM v_models WHERE session_id = :session_id;

-- name: models
-- Registry entries, newest first, optionally of one kind and / or symbol.
SELECT session_id, version, model_kind, symbol, init_session_id, trained_through, eval_from, eval_episodes,
       eval_accuracy, eval_baseline_accuracy, eval_mean_profit_per_call, eval_best_constant_profit_per_call,
       eval_contaminated, training_value, is_deployed, deployed_at, ended_at
FROM v_models
WHERE (CAST(:model_kind AS text) IS NULL OR model_kind = :model_kind)
  AND (CAST(:symbol AS text) IS NULL OR symbol = :symbol)
ORDER BY session_id DESC
LIMIT :limit;

-- name: contamination
-- Members of a session's lineage that trained on data ending after the slice start (none: clean).
SELECT session_id, depth, trained_through FROM model_contamination(:session_id, :slice_start);

-- name: lineage
-- A model's lineage, itself first.
SELECT depth, session_id, checkpoint_id, model_kind, symbol, status, trained_through
FROM v_model_lineage WHERE model_session_id = :session_id ORDER BY depth;

-- name: lock_deployment
-- Serialise the decisions on one (kind, symbol) until the end of the transaction.
SELECT pg_advisory_xact_lock(29781, hashtext(CAST(:model_kind AS text) || '/' || CAST(:symbol AS text)));

-- name: rollback_target
-- The model a rollback restores: the newest earlier promoted model of the kind and symbol that is not
-- the deployed one and was not itself rolled back from (so successive rollbacks walk back in history).
SELECT d.session_id
FROM model_deployments d
WHERE d.model_kind = :model_kind AND d.symbol = :symbol AND d.action = 'promote'
  AND d.session_id <> :current
  AND NOT EXISTS (SELECT 1 FROM model_deployments r
                  WHERE r.model_kind = d.model_kind AND r.symbol = d.symbol AND r.action = 'rollback'
                    AND r.previous_session_id = d.session_id AND r.id > d.id)
ORDER BY d.id DESC
LIMIT 1;

-- name: decisions
-- The deployment history of a model (as candidate, restored model or the one replaced).
SELECT id, model_kind, symbol, action, session_id, previous_session_id, source, reason, evidence, decided_at
FROM model_deployments
WHERE session_id = :session_id OR previous_session_id = :session_id
ORDER BY id;

-- name: live_performance
-- Deployment periods with their live results, newest first, optionally of one kind and / or symbol.
SELECT deployment_id, model_kind, symbol, version, action, deployed_at, replaced_at, is_current, predictions,
       validated, calls, live_hit_rate, live_profit_per_call, live_total_profit, live_accuracy,
       offline_profit_per_call, offline_hit_rate, offline_accuracy, offline_baseline_accuracy
FROM v_model_live_performance
WHERE (CAST(:model_kind AS text) IS NULL OR model_kind = :model_kind)
  AND (CAST(:symbol AS text) IS NULL OR symbol = :symbol)
ORDER BY deployment_id DESC;

-- name: rl_training_items
-- The experiences of a symbol an RL session may train on: all data they depend on ended by the cutoff.
SELECT item_id FROM v_training_data_end
WHERE model_kind = 'rl' AND symbol = :symbol AND data_end <= :cutoff;

-- name: rl_eval_cutoff
-- Start of an RL session's evaluation slice: the package time below which (1 - :eval_fraction) of the symbol's RL episodes lie.
SELECT percentile_disc(1 - CAST(:eval_fraction AS float8)) WITHIN GROUP (ORDER BY ts) AS cutoff,
       count(*) AS episodes
FROM v_rl_episodes
WHERE symbol = :symbol;

-- name: rl_evaluation_episodes
-- Every RL episode of the evaluation slice (package time at or after the cutoff), oldest first.
SELECT * FROM v_rl_episodes WHERE symbol = :symbol AND ts >= :cutoff ORDER BY ts, episode_id;

-- name: rl_episodes_by_id
-- RL episodes by id, oldest first (a later re-evaluation of a session's slice).
SELECT * FROM v_rl_episodes WHERE episode_id = ANY(CAST(:ids AS bigint[])) ORDER BY ts, episode_id;

-- name: unfinished_gates
-- promote_model jobs queued or running (the demo waits for them before its summary).
SELECT id FROM jobs WHERE kind = 'promote_model' AND state IN ('queued', 'running') ORDER BY id;

-- name: decision_counts
-- How many promotions, refusals and rollbacks each kind and symbol has had.
SELECT model_kind, symbol, action, count(*) AS decisions
FROM model_deployments GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- name: refusal_reasons
-- The most frequent reasons of refusals (what the gate said no to).
SELECT model_kind, reason, count(*) AS refusals
FROM model_deployments WHERE action = 'refuse' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 5;

-- name: deployed_version
-- The version string of the deployed model (NULL: none); works for the orchestrator's role.
SELECT deployed_version(:model_kind, :symbol) AS version;

-- name: deployed_model
-- The deployed model's session config and latest checkpoint; works for the orchestrator's role.
SELECT * FROM deployed_model(:model_kind, :symbol);

-- name: symbol_experiences
-- How many experiences a symbol has (the RL hold-out's share of them sizes its draws).
SELECT count(*) FROM experiences WHERE symbol = :symbol;
