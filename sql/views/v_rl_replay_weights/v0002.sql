-- v_rl_replay_weights v0002: the profit-weighted prioritized-replay weight of every experience
-- (Schaul et al. 2016), whether or not it may be replayed (v_rl_replay keeps the replayable ones):
--   priority_alpha = priority ^ alpha                (alpha from rl_replay_config)
--   profit_weight  = profit_boost for profitable experiences, 1 otherwise
--   sample_weight  = priority_alpha * profit_weight  (rl_replay_weight: the sampling mass of a replayable row)
-- It needs no package, so the replay's write paths re-weigh experiences from here without reading their
-- packages again. Changed from v0001: priority is the latest write-back still pending in the log
-- (v_rl_replay_pending_priorities) when there is one, as times_sampled / last_sampled_at already include the
-- draws not yet folded (v_rl_replay_pending_draws), so all of them are exact at any time.
CREATE VIEW v_rl_replay_weights AS
SELECT e.id,
       e.symbol,
       e.state_package_id,
       e.next_state_package_id,
       e.action,
       e.reward,
       e.done,
       e.optimal_action,
       e.is_profitable,
       w.priority,
       e.times_sampled + coalesce(p.draws, 0) AS times_sampled,
       greatest(e.last_sampled_at, p.last_drawn_at) AS last_sampled_at,
       e.created_at,
       c.alpha,
       power(w.priority, c.alpha) AS priority_alpha,
       CASE WHEN e.is_profitable THEN c.profit_boost ELSE 1.0::float8 END AS profit_weight,
       rl_replay_weight(w.priority, e.is_profitable, c.alpha, c.profit_boost) AS sample_weight
FROM experiences e
JOIN rl_replay_config c ON c.id = 1
LEFT JOIN v_rl_replay_pending_draws p ON p.experience_id = e.id
LEFT JOIN v_rl_replay_pending_priorities pp ON pp.experience_id = e.id
CROSS JOIN LATERAL (SELECT coalesce(pp.priority, e.priority) AS priority) AS w;
