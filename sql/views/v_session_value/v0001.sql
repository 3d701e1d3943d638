-- v_session_value v0001: one row per training session with what it cost and what it is worth:
-- steps and losses, convergence, training_value (see docs/training.md), the out-of-sample
-- evaluation on the chronologically later slice, and gradient storage used.
-- beats_baseline: the model's calls were more accurate than always calling the slice's most
-- frequent optimal action AND made money after costs (the always-hold baseline makes zero).
CREATE VIEW v_session_value AS
SELECT s.id AS session_id,
       s.model_kind,
       s.model_name,
       s.status,
       s.capture_policy,
       s.replay_exact,
       s.parent_session_id,
       s.device,
       s.started_at,
       s.ended_at,
       extract(epoch FROM coalesce(s.ended_at, now()) - s.started_at) AS duration_s,
       st.steps,
       st.last_step,
       st.final_loss,
       s.best_loss,
       s.converged,
       s.training_value,
       (s.metrics -> 'evaluation' ->> 'episodes')::bigint AS eval_episodes,
       (s.metrics -> 'evaluation' ->> 'accuracy')::float8 AS eval_accuracy,
       (s.metrics -> 'evaluation' ->> 'baseline_accuracy')::float8 AS eval_baseline_accuracy,
       (s.metrics -> 'evaluation' ->> 'hit_rate')::float8 AS eval_hit_rate,
       (s.metrics -> 'evaluation' ->> 'total_profit')::float8 AS eval_total_profit,
       (s.metrics -> 'evaluation' ->> 'mean_profit_per_call')::float8 AS eval_mean_profit_per_call,
       coalesce((s.metrics -> 'evaluation' ->> 'accuracy')::float8
                    > (s.metrics -> 'evaluation' ->> 'baseline_accuracy')::float8
                AND (s.metrics -> 'evaluation' ->> 'total_profit')::float8 > 0, false) AS beats_baseline,
       g.gradient_bytes,
       (SELECT count(*) FROM checkpoints c WHERE c.session_id = s.id) AS checkpoints,
       rank() OVER (PARTITION BY s.model_kind ORDER BY s.training_value DESC NULLS LAST) AS value_rank
FROM training_sessions s
LEFT JOIN LATERAL (
    SELECT count(*) AS steps,
           max(t.step) AS last_step,
           (array_agg(t.loss_total ORDER BY t.step DESC))[1] AS final_loss
    FROM training_steps t WHERE t.session_id = s.id
) st ON true
LEFT JOIN LATERAL (
    SELECT coalesce(sum(b.byte_length), 0)::bigint AS gradient_bytes
    FROM gradient_blobs b WHERE b.session_id = s.id
) g ON true;
