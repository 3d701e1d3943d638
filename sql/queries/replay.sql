-- RL profit-weighted prioritized replay (app/replay). The sampling index, its algorithm and the sampler:
-- sql/functions/rl_replay_index/v0003.sql. Sampling weights and probabilities: v_rl_replay.

-- name: sizes
-- Replayable experiences (of one symbol, or all when NULL) per class, from the sampling index.
SELECT coalesce(sum(n) FILTER (WHERE is_profitable), 0)::bigint AS profitable,
       coalesce(sum(n), 0)::bigint AS total
FROM rl_replay_buckets
WHERE n > 0 AND (CAST(:symbol AS text) IS NULL OR symbol = CAST(:symbol AS text));

-- name: sample
-- Draw a batch (need_all from all, need_profitable from profitable experiences), log the draws, return the rows with their probabilities (rl_replay_sample).
SELECT stratum, id, symbol, state_package_id, next_state_package_id, action, reward, done, optimal_action,
       is_profitable, priority, sample_weight, sampling_probability, profitable_probability, replay_size
FROM rl_replay_sample(CAST(:symbol AS text), CAST(:need_all AS integer), CAST(:need_profitable AS integer),
                      CAST(:seed AS float8), CAST(:synchronous_commit AS boolean));

-- name: update_priorities
-- Write back new priorities (|TD error| + epsilon): logged for the fold, the index re-weighed in the same statement; returns how many ids are replayable.
SELECT rl_replay_write_back(CAST(:ids AS bigint[]), CAST(:priorities AS float8[]),
                            CAST(:synchronous_commit AS boolean)) AS written;

-- name: fold
-- Fold the oldest :batches logged write-backs and sampled batches (all when NULL) into experiences, re-placing rows left low in their buckets when the sampler's acceptance is below :compact_below; returns the log rows folded.
SELECT rl_replay_fold(CAST(:batches AS integer), CAST(:compact_below AS float8)) AS folded;

-- name: pending
-- Write-backs and sampled batches not folded into experiences yet.
SELECT (SELECT count(*) FROM rl_replay_priority_log) AS write_backs, (SELECT count(*) FROM rl_replay_draws) AS batches;

-- name: max_priority
-- The running maximum priority: what a new experience enters the replay at.
SELECT max_priority FROM rl_replay_config WHERE id = 1;

-- name: config
-- The replay's alpha, profit boost and running maximum priority.
SELECT alpha, profit_boost, max_priority FROM rl_replay_config WHERE id = 1;

-- name: configure
-- Change alpha / profit boost (NULL keeps the value); the rl_replay_on_config trigger rebuilds the index.
UPDATE rl_replay_config
SET alpha = coalesce(CAST(:alpha AS float8), alpha),
    profit_boost = coalesce(CAST(:profit_boost AS float8), profit_boost)
WHERE id = 1;

-- name: rebuild
-- Rebuild the sampling index from v_rl_replay; returns the number of replayable experiences.
SELECT rl_replay_rebuild() AS replay_size;

-- name: stats
-- Profitable vs unprofitable experiences per symbol: counts, replayable, sampling counts and shares.
SELECT symbol, is_profitable, experiences, replayable, times_sampled, sampled_experiences, last_sampled_at,
       mean_priority, max_priority, mean_reward, probability_mass_share, sample_share
FROM v_rl_replay_stats
ORDER BY symbol, is_profitable DESC;

-- name: index_check
-- Invariant check of the sampling index: buckets whose slots are not distinct and dense 0..n-1 or whose sums drifted, and slots without a bucket.
SELECT b.symbol, b.is_profitable, b.bucket, b.n, count(s.slot) AS slots, min(s.slot) AS min_slot,
       max(s.slot) AS max_slot, b.weight_sum, coalesce(sum(s.weight), 0) AS actual_weight_sum
FROM rl_replay_buckets b
LEFT JOIN rl_replay_slots s ON s.bucket_id = b.id
GROUP BY b.id
HAVING count(s.slot) <> b.n OR count(DISTINCT s.slot) <> b.n
    OR coalesce(max(s.slot), -1) <> b.n - 1 OR coalesce(min(s.slot), 0) <> 0
    OR abs(b.weight_sum - coalesce(sum(s.weight), 0)) > 1e-9 * greatest(1, abs(b.weight_sum))
UNION ALL
SELECT NULL, NULL, NULL, NULL, count(*), min(s.slot), max(s.slot), NULL, sum(s.weight)
FROM rl_replay_slots s
WHERE NOT EXISTS (SELECT 1 FROM rl_replay_buckets b WHERE b.id = s.bucket_id)
HAVING count(*) > 0;

-- name: index_mismatches
-- Replayable experiences missing from the sampling index, stale index rows, or rows whose symbol / weight / class / copied fields differ from v_rl_replay or whose weight does not fit their bucket (rl_replay_tolerates: below its top, within four octaves of it).
SELECT coalesce(v.id, s.experience_id) AS experience_id,
       CASE WHEN s.experience_id IS NULL THEN 'missing'
            WHEN v.id IS NULL THEN 'stale'
            ELSE 'different' END AS problem
FROM v_rl_replay v
FULL JOIN (rl_replay_slots s LEFT JOIN rl_replay_buckets b ON b.id = s.bucket_id) ON s.experience_id = v.id
WHERE v.id IS NULL OR s.experience_id IS NULL
   OR b.symbol IS DISTINCT FROM v.symbol OR s.weight <> v.sample_weight OR b.is_profitable IS DISTINCT FROM v.is_profitable
   OR rl_replay_tolerates(v.sample_weight, b.bucket) IS NOT TRUE
   OR (s.priority, s.state_package_id, s.next_state_package_id, s.action, s.reward, s.done, s.optimal_action)
      IS DISTINCT FROM (v.priority, v.state_package_id, v.next_state_package_id, v.action, v.reward, v.done,
                        v.optimal_action)
ORDER BY 1
LIMIT 100;

-- name: first_state_package
-- One replayable state package of a symbol (its shape defines the agent's input).
SELECT state_package_id FROM v_rl_replay WHERE symbol = :symbol ORDER BY id LIMIT 1;
