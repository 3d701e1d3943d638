-- v_rl_replay v0001: the experiences that may be replayed — both the state package and the
-- next-state package valid (a terminal transition may have no next state) — with the
-- profit-weighted prioritized-replay quantities (Schaul et al. 2016):
--   priority_alpha, profit_weight, sample_weight  from v_rl_replay_weights (where the weighting is defined)
--   sampling_probability    = sample_weight / sum over all replayable experiences
--   profitable_probability  = sample_weight / sum over the profitable ones (NULL when unprofitable)
--   replay_size             = number of replayable experiences (N in the importance weight (N P)^-beta)
--   symbol_*                = the same three within the experience's symbol (what `--symbol` samples)
-- The sums come from v_rl_replay_totals (the sampling index's buckets, kept in step by trigger). The
-- sampler (rl_replay_sample) returns these same ratios for the rows it draws.
CREATE VIEW v_rl_replay AS
SELECT w.*,
       w.sample_weight / nullif(t.weight_all, 0) AS sampling_probability,
       CASE WHEN w.is_profitable THEN w.sample_weight / nullif(t.weight_profitable, 0) END AS profitable_probability,
       t.replay_size,
       w.sample_weight / nullif(ts.weight_all, 0) AS symbol_sampling_probability,
       CASE WHEN w.is_profitable THEN w.sample_weight / nullif(ts.weight_profitable, 0) END
           AS symbol_profitable_probability,
       coalesce(ts.replay_size, 0) AS symbol_replay_size
FROM v_rl_replay_weights w
JOIN input_packages s ON s.id = w.state_package_id
LEFT JOIN input_packages n ON n.id = w.next_state_package_id
CROSS JOIN (SELECT * FROM v_rl_replay_totals WHERE symbol IS NULL) AS t
LEFT JOIN v_rl_replay_totals ts ON ts.symbol = w.symbol
WHERE s.is_valid
  AND (n.is_valid OR (w.next_state_package_id IS NULL AND w.done));
