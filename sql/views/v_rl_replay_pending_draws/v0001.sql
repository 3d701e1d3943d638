-- v_rl_replay_pending_draws v0001: draws of replay batches not yet folded into experiences.times_sampled /
-- last_sampled_at (rl_replay_draws: one row per batch; the batch's priority write-back folds it), per
-- experience. v_rl_replay_weights adds them, so every view shows exact sampling counts.
CREATE VIEW v_rl_replay_pending_draws AS
SELECT u.experience_id,
       count(*)::bigint AS draws,
       max(d.drawn_at) AS last_drawn_at
FROM rl_replay_draws d
CROSS JOIN LATERAL unnest(d.experience_ids) AS u(experience_id)
GROUP BY u.experience_id;
