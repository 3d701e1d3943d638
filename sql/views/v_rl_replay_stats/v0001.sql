-- v_rl_replay_stats v0001: profitable and unprofitable experiences tracked separately — how many
-- there are, how many may be replayed, how often each class was sampled, and its share of the
-- replay probability mass and of all samples drawn within its symbol. One row per symbol and class.
CREATE VIEW v_rl_replay_stats AS
WITH classes AS (
    -- v_rl_replay_weights: every experience, its sampling counts including draws not yet folded.
    SELECT e.symbol,
           e.is_profitable,
           count(*) AS experiences,
           coalesce(sum(e.times_sampled), 0)::bigint AS times_sampled,
           count(*) FILTER (WHERE e.times_sampled > 0) AS sampled_experiences,
           max(e.last_sampled_at) AS last_sampled_at,
           avg(e.priority) AS mean_priority,
           max(e.priority) AS max_priority,
           avg(e.reward) AS mean_reward
    FROM v_rl_replay_weights e
    GROUP BY e.symbol, e.is_profitable
),
replayable AS (
    SELECT b.symbol, b.is_profitable, sum(b.n)::bigint AS replayable, sum(b.weight_sum) AS weight
    FROM rl_replay_buckets b
    WHERE b.n > 0
    GROUP BY b.symbol, b.is_profitable
)
SELECT c.symbol,
       c.is_profitable,
       c.experiences,
       coalesce(r.replayable, 0) AS replayable,
       c.times_sampled,
       c.sampled_experiences,
       c.last_sampled_at,
       c.mean_priority,
       c.max_priority,
       c.mean_reward,
       coalesce(r.weight, 0) / nullif(sum(r.weight) OVER (PARTITION BY c.symbol), 0) AS probability_mass_share,
       c.times_sampled::float8 / nullif(sum(c.times_sampled) OVER (PARTITION BY c.symbol), 0) AS sample_share
FROM classes c
LEFT JOIN replayable r USING (symbol, is_profitable);
