-- v_session_value v0002: one row per training session with what it cost and what it is worth:
-- steps and losses, convergence, training_value (see docs/training.md), the out-of-sample
-- evaluation on the chronologically later slice, and gradient storage used.
--
-- Losses say what they are (v0001's best_loss was smoothed and final_loss raw, so "best" could be
-- above "final"). *_raw are step losses (training_steps.loss_total); *_smoothed are the convergence
-- tracker's EMA (0.9) of the same loss. min_loss_raw <= final_loss_raw and
-- best_loss_smoothed <= final_loss_smoothed always hold.
--
-- Evaluation (CNN and, since migration 0015, RL: the greedy policy's calls on the later slice):
-- beats_baseline: the calls were more accurate than always calling the slice's most frequent optimal
-- action, AND their profit per call beat both always-hold (0) and the best constant action (always
-- long or always short), AND the slice was clean (no model in the session's lineage trained on data
-- ending after the slice's start; eval_contaminated).
CREATE VIEW v_session_value AS
SELECT s.id AS session_id,
       s.model_kind,
       s.model_name,
       s.status,
       s.capture_policy,
       s.replay_exact,
       s.parent_session_id,
       s.init_session_id,
       s.device,
       s.started_at,
       s.ended_at,
       extract(epoch FROM coalesce(s.ended_at, now()) - s.started_at) AS duration_s,
       st.steps,
       st.last_step,
       st.first_loss_raw,
       st.min_loss_raw,
       st.final_loss_raw,
       coalesce(s.metrics ->> 'first_loss_smoothed', s.metrics ->> 'first_loss')::float8 AS first_loss_smoothed,
       s.best_loss AS best_loss_smoothed,
       coalesce(s.metrics ->> 'final_loss_smoothed', s.metrics ->> 'final_loss')::float8 AS final_loss_smoothed,
       s.converged,
       s.training_value,
       (s.metrics -> 'evaluation' ->> 'episodes')::bigint AS eval_episodes,
       (s.metrics -> 'evaluation' ->> 'accuracy')::float8 AS eval_accuracy,
       (s.metrics -> 'evaluation' ->> 'baseline_accuracy')::float8 AS eval_baseline_accuracy,
       (s.metrics -> 'evaluation' ->> 'hit_rate')::float8 AS eval_hit_rate,
       (s.metrics -> 'evaluation' ->> 'total_profit')::float8 AS eval_total_profit,
       (s.metrics -> 'evaluation' ->> 'mean_profit_per_call')::float8 AS eval_mean_profit_per_call,
       (s.metrics -> 'evaluation' ->> 'best_constant_action') AS eval_best_constant_action,
       (s.metrics -> 'evaluation' ->> 'best_constant_profit_per_call')::float8 AS eval_best_constant_profit_per_call,
       (s.metrics -> 'evaluation' ->> 'contaminated')::boolean AS eval_contaminated,
       coalesce((s.metrics -> 'evaluation' ->> 'accuracy')::float8
                    > (s.metrics -> 'evaluation' ->> 'baseline_accuracy')::float8
                AND (s.metrics -> 'evaluation' ->> 'calls')::bigint > 0
                AND (s.metrics -> 'evaluation' ->> 'mean_profit_per_call')::float8
                    > greatest(0, coalesce((s.metrics -> 'evaluation' ->> 'best_constant_profit_per_call')::float8, 0))
                AND NOT coalesce((s.metrics -> 'evaluation' ->> 'contaminated')::boolean, false), false)
           AS beats_baseline,
       g.gradient_bytes,
       (SELECT count(*) FROM checkpoints c WHERE c.session_id = s.id) AS checkpoints,
       rank() OVER (PARTITION BY s.model_kind ORDER BY s.training_value DESC NULLS LAST) AS value_rank
FROM training_sessions s
LEFT JOIN LATERAL (
    SELECT count(*) AS steps,
           max(t.step) AS last_step,
           (array_agg(t.loss_total ORDER BY t.step))[1] AS first_loss_raw,
           min(t.loss_total) AS min_loss_raw,
           (array_agg(t.loss_total ORDER BY t.step DESC))[1] AS final_loss_raw
    FROM training_steps t WHERE t.session_id = s.id
) st ON true
LEFT JOIN LATERAL (
    SELECT coalesce(sum(b.byte_length), 0)::bigint AS gradient_bytes
    FROM gradient_blobs b WHERE b.session_id = s.id
) g ON true;
