-- v_models v0001: the model registry. Every succeeded CNN / RL training session (not a replay) is a
-- candidate model: its version string, symbol, lineage (init_session_id: the session whose checkpoint
-- init_checkpoint_id it started from; NULL: random weights), the checkpoint that holds it, what it
-- trained on up to (trained_through), its evaluation slice and result, and whether it is deployed.
CREATE VIEW v_models AS
SELECT s.id AS session_id,
       model_version(s.model_kind, s.id) AS version,
       s.model_kind,
       s.config ->> 'symbol' AS symbol,
       s.model_name,
       s.init_session_id,
       s.init_checkpoint_id,
       c.id AS checkpoint_id,
       c.step AS checkpoint_step,
       s.trained_through,
       (s.config ->> 'eval_cutoff')::timestamptz AS eval_from,
       (s.metrics -> 'evaluation' ->> 'episodes')::bigint AS eval_episodes,
       (s.metrics -> 'evaluation' ->> 'accuracy')::float8 AS eval_accuracy,
       (s.metrics -> 'evaluation' ->> 'baseline_accuracy')::float8 AS eval_baseline_accuracy,
       (s.metrics -> 'evaluation' ->> 'mean_profit_per_call')::float8 AS eval_mean_profit_per_call,
       (s.metrics -> 'evaluation' ->> 'best_constant_profit_per_call')::float8 AS eval_best_constant_profit_per_call,
       (s.metrics -> 'evaluation' ->> 'hit_rate')::float8 AS eval_hit_rate,
       (s.metrics -> 'evaluation' ->> 'contaminated')::boolean AS eval_contaminated,
       s.training_value,
       d.deployment_id IS NOT NULL AS is_deployed,
       d.deployed_at,
       s.ended_at
FROM training_sessions s
LEFT JOIN LATERAL (
    SELECT k.id, k.step FROM checkpoints k WHERE k.session_id = s.id ORDER BY k.step DESC LIMIT 1
) c ON true
LEFT JOIN v_deployed_models d ON d.model_kind = s.model_kind AND d.session_id = s.id
WHERE s.status = 'succeeded'
  AND s.model_kind IN ('cnn', 'rl')
  AND s.config ? 'symbol'
  AND s.parent_session_id IS NULL;  -- replays (replay_onto) record their source session there
