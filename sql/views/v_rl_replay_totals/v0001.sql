-- v_rl_replay_totals v0001: the replay's totals per symbol, and over all symbols (the row whose symbol
-- is NULL): the sample_weight mass of all replayable experiences and of the profitable ones, and their
-- number N. They come from the sampling index's buckets (rl_replay_buckets), which the rl_replay_index
-- triggers keep equal to v_rl_replay; v_rl_replay's probabilities and the sampler both divide by them.
CREATE VIEW v_rl_replay_totals AS
SELECT b.symbol,
       sum(b.weight_sum) FILTER (WHERE b.n > 0) AS weight_all,
       sum(b.weight_sum) FILTER (WHERE b.n > 0 AND b.is_profitable) AS weight_profitable,
       coalesce(sum(b.n), 0)::bigint AS replay_size
FROM rl_replay_buckets b
GROUP BY GROUPING SETS ((b.symbol), ());
