-- RL profit-weighted prioritized replay (app/replay). The sampling index and its algorithm:
-- sql/functions/rl_replay_index/v0001.sql. Sampling weights and probabilities: v_rl_replay.

-- name: sizes
-- Replayable experiences (of one symbol, or all when NULL) per class from the sampling index, and the expected acceptance rate of a candidate draw per stratum.
SELECT coalesce(sum(n) FILTER (WHERE is_profitable), 0)::bigint AS profitable,
       coalesce(sum(n), 0)::bigint AS total,
       sum(weight_sum) FILTER (WHERE is_profitable)
           / nullif(sum(n * power(2::float8, bucket + 1)) FILTER (WHERE is_profitable), 0) AS acceptance_profitable,
       sum(weight_sum) / nullif(sum(n * power(2::float8, bucket + 1)), 0) AS acceptance_all
FROM rl_replay_buckets
WHERE n > 0 AND (CAST(:symbol AS text) IS NULL OR symbol = CAST(:symbol AS text));

-- name: sample
-- Bucketed rejection sampling: per draw pick a bucket by n*2^(k+1), a uniform slot, accept with w/2^(k+1); keep the first ones needed per stratum, count them as sampled, return their v_rl_replay rows.
WITH ranked AS (
    SELECT s.stratum, b.symbol, b.is_profitable, b.bucket, b.n,
           sum(b.n * power(2::float8, b.bucket + 1)) OVER w - b.n * power(2::float8, b.bucket + 1) AS lower,
           sum(b.n * power(2::float8, b.bucket + 1)) OVER (PARTITION BY s.stratum) AS total
    FROM rl_replay_buckets b
    JOIN (VALUES (0), (1)) AS s(stratum) ON s.stratum = 0 OR b.is_profitable
    WHERE b.n > 0 AND (CAST(:symbol AS text) IS NULL OR b.symbol = CAST(:symbol AS text))
    WINDOW w AS (PARTITION BY s.stratum ORDER BY b.symbol, b.is_profitable, b.bucket)
), tables AS (
    SELECT stratum, max(total) AS total,
           array_agg(lower ORDER BY lower) AS lowers,
           array_agg(symbol ORDER BY lower) AS symbols,
           array_agg(is_profitable ORDER BY lower) AS classes,
           array_agg(bucket ORDER BY lower) AS buckets,
           array_agg(n ORDER BY lower) AS sizes
    FROM ranked GROUP BY stratum
), draws AS (
    SELECT d.draw, d.stratum, d.u_accept, t.symbols[p.i] AS symbol, t.classes[p.i] AS is_profitable,
           t.buckets[p.i] AS bucket,
           least(floor(d.u_slot * t.sizes[p.i]), t.sizes[p.i] - 1)::integer AS slot
    FROM unnest(CAST(:strata AS integer[]), CAST(:u_bucket AS float8[]), CAST(:u_slot AS float8[]),
                CAST(:u_accept AS float8[])) WITH ORDINALITY AS d(stratum, u_bucket, u_slot, u_accept, draw)
    JOIN tables t ON t.stratum = d.stratum
    CROSS JOIN LATERAL (SELECT width_bucket(d.u_bucket * t.total, t.lowers) AS i) AS p
), accepted AS (
    SELECT d.draw, d.stratum, s.experience_id,
           row_number() OVER (PARTITION BY d.stratum ORDER BY d.draw) AS rank
    FROM draws d
    JOIN rl_replay_slots s
      ON s.symbol = d.symbol AND s.is_profitable = d.is_profitable AND s.bucket = d.bucket AND s.slot = d.slot
    WHERE d.u_accept * power(2::float8, d.bucket + 1) < s.weight
), batch AS MATERIALIZED (
    -- Through the view: validity is re-checked and the probabilities come from one place.
    SELECT a.draw, a.stratum, v.id, v.symbol, v.state_package_id, v.next_state_package_id, v.action, v.reward,
           v.done, v.optimal_action, v.is_profitable, v.priority, v.sample_weight,
           CASE WHEN CAST(:symbol AS text) IS NULL THEN v.sampling_probability
                ELSE v.symbol_sampling_probability END AS sampling_probability,
           CASE WHEN CAST(:symbol AS text) IS NULL THEN v.profitable_probability
                ELSE v.symbol_profitable_probability END AS profitable_probability,
           CASE WHEN CAST(:symbol AS text) IS NULL THEN v.replay_size ELSE v.symbol_replay_size END AS replay_size
    FROM accepted a
    JOIN v_rl_replay v ON v.id = a.experience_id
    WHERE a.rank <= CASE a.stratum WHEN 1 THEN CAST(:need_profitable AS integer) ELSE CAST(:need_all AS integer) END
), counted AS (
    UPDATE experiences e
    SET times_sampled = e.times_sampled + c.draws, last_sampled_at = now()
    FROM (SELECT id, count(*) AS draws FROM batch GROUP BY id) AS c
    WHERE e.id = c.id
)
SELECT stratum, id, symbol, state_package_id, next_state_package_id, action, reward, done, optimal_action,
       is_profitable, priority, sample_weight, sampling_probability, profitable_probability, replay_size
FROM batch
ORDER BY draw;

-- name: update_priorities
-- Write back new priorities (|TD error| + epsilon); the rl_replay_on_update trigger re-indexes them.
UPDATE experiences e
SET priority = u.priority
FROM unnest(CAST(:ids AS bigint[]), CAST(:priorities AS float8[])) AS u(id, priority)
WHERE e.id = u.id;

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
-- Invariant check of the sampling index: buckets whose slots are not dense 0..n-1 or whose sums drifted, and slots without a bucket.
SELECT b.symbol, b.is_profitable, b.bucket, b.n, count(s.slot) AS slots, min(s.slot) AS min_slot,
       max(s.slot) AS max_slot, b.weight_sum, coalesce(sum(s.weight), 0) AS actual_weight_sum
FROM rl_replay_buckets b
LEFT JOIN rl_replay_slots s ON s.symbol = b.symbol AND s.is_profitable = b.is_profitable AND s.bucket = b.bucket
GROUP BY b.symbol, b.is_profitable, b.bucket, b.n, b.weight_sum
HAVING count(s.slot) <> b.n OR coalesce(max(s.slot), -1) <> b.n - 1 OR coalesce(min(s.slot), 0) <> 0
    OR abs(b.weight_sum - coalesce(sum(s.weight), 0)) > 1e-9 * greatest(1, abs(b.weight_sum))
UNION ALL
SELECT s.symbol, s.is_profitable, s.bucket, NULL, count(*), min(s.slot), max(s.slot), NULL, sum(s.weight)
FROM rl_replay_slots s
LEFT JOIN rl_replay_buckets b ON b.symbol = s.symbol AND b.is_profitable = s.is_profitable AND b.bucket = s.bucket
WHERE b.bucket IS NULL
GROUP BY s.symbol, s.is_profitable, s.bucket;

-- name: index_mismatches
-- Replayable experiences missing from the sampling index, stale index rows, or rows whose symbol / weight / class / bucket differ from v_rl_replay.
SELECT coalesce(v.id, s.experience_id) AS experience_id,
       CASE WHEN s.experience_id IS NULL THEN 'missing'
            WHEN v.id IS NULL THEN 'stale'
            ELSE 'different' END AS problem
FROM v_rl_replay v
FULL JOIN rl_replay_slots s ON s.experience_id = v.id
WHERE v.id IS NULL OR s.experience_id IS NULL
   OR s.symbol <> v.symbol OR s.weight <> v.sample_weight OR s.is_profitable <> v.is_profitable
   OR s.bucket <> rl_replay_bucket(v.sample_weight)
ORDER BY 1
LIMIT 100;

-- name: first_state_package
-- One replayable state package of a symbol (its shape defines the agent's input).
SELECT state_package_id FROM v_rl_replay WHERE symbol = :symbol ORDER BY id LIMIT 1;
