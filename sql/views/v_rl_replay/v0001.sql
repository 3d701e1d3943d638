-- v_rl_replay v0001: the experiences that may be replayed — both the state package and the
-- next-state package valid (a terminal transition may have no next state) — with the
-- profit-weighted prioritized-replay quantities (Schaul et al. 2016):
--   priority_alpha     = priority ^ alpha                       (alpha from rl_replay_config)
--   profit_weight      = profit_boost for profitable experiences, 1 otherwise
--   sample_weight      = priority_alpha * profit_weight         (the sampling mass of the row)
--   sampling_probability    = sample_weight / sum over all replayable experiences
--   profitable_probability  = sample_weight / sum over the profitable ones (NULL when unprofitable)
--   replay_size             = number of replayable experiences (N in the importance weight (N P)^-beta)
--   symbol_*                = the same three within the experience's symbol (what `--symbol` samples)
-- The sums come from rl_replay_buckets, which the rl_replay_index triggers keep in step with
-- sample_weight; this view is the only place the profit weighting is defined.
CREATE VIEW v_rl_replay AS
SELECT r.*,
       r.sample_weight / nullif(t.weight_all, 0) AS sampling_probability,
       CASE WHEN r.is_profitable THEN r.sample_weight / nullif(t.weight_profitable, 0) END AS profitable_probability,
       t.replay_size,
       r.sample_weight / nullif(ts.weight_all, 0) AS symbol_sampling_probability,
       CASE WHEN r.is_profitable THEN r.sample_weight / nullif(ts.weight_profitable, 0) END
           AS symbol_profitable_probability,
       coalesce(ts.replay_size, 0) AS symbol_replay_size
FROM (
    SELECT w.*, w.priority_alpha * w.profit_weight AS sample_weight
    FROM (
        SELECT e.id,
               e.symbol,
               e.state_package_id,
               e.next_state_package_id,
               e.action,
               e.reward,
               e.done,
               e.optimal_action,
               e.is_profitable,
               e.priority,
               e.times_sampled,
               e.last_sampled_at,
               e.created_at,
               c.alpha,
               power(e.priority, c.alpha) AS priority_alpha,
               CASE WHEN e.is_profitable THEN c.profit_boost ELSE 1.0::float8 END AS profit_weight
        FROM experiences e
        JOIN input_packages s ON s.id = e.state_package_id
        LEFT JOIN input_packages n ON n.id = e.next_state_package_id
        JOIN rl_replay_config c ON c.id = 1
        WHERE s.is_valid
          AND (n.is_valid OR (e.next_state_package_id IS NULL AND e.done))
    ) AS w
) AS r
CROSS JOIN (
    SELECT sum(b.weight_sum) FILTER (WHERE b.n > 0) AS weight_all,
           sum(b.weight_sum) FILTER (WHERE b.n > 0 AND b.is_profitable) AS weight_profitable,
           coalesce(sum(b.n), 0)::bigint AS replay_size
    FROM rl_replay_buckets b
) AS t
LEFT JOIN (
    SELECT b.symbol,
           sum(b.weight_sum) FILTER (WHERE b.n > 0) AS weight_all,
           sum(b.weight_sum) FILTER (WHERE b.n > 0 AND b.is_profitable) AS weight_profitable,
           sum(b.n)::bigint AS replay_size
    FROM rl_replay_buckets b
    GROUP BY b.symbol
) AS ts ON ts.symbol = r.symbol;
