-- name: system_stats
-- Per-table row counts, sizes and health from the v_system_stats view.
SELECT table_name, row_count, total_bytes, dead_rows, last_vacuum_at, last_analyze_at, health
FROM v_system_stats
ORDER BY table_name;

-- name: integration
-- The integration statistics: packages, validity, completeness, outcomes, experiences, sessions, queue, RL logs, storage.
SELECT
    (SELECT count(*) FROM input_packages) AS packages,
    (SELECT count(*) FROM input_packages WHERE is_valid) AS valid_packages,
    (SELECT avg(is_valid::int)::float8 FROM input_packages) AS validity_rate,
    (SELECT avg(completeness_score) FROM input_packages) AS mean_completeness,
    (SELECT count(*) FROM input_packages WHERE is_premium) AS premium_packages,
    (SELECT count(*) FROM predictions) AS predictions,
    (SELECT count(*) FROM outcomes WHERE status = 'validated') AS validated_outcomes,
    (SELECT count(*) FROM outcomes WHERE status = 'pending') AS pending_outcomes,
    (SELECT count(*) FILTER (WHERE o.status = 'validated')::float8 / nullif(count(*), 0)
       FROM predictions p LEFT JOIN outcomes o ON o.prediction_id = p.id) AS outcome_validation_rate,
    (SELECT avg(is_profitable::int)::float8 FROM outcomes WHERE status = 'validated') AS profitable_share,
    (SELECT count(*) FROM market_events) AS market_events,
    (SELECT count(*) FROM experiences) AS experiences,
    (SELECT count(*) FROM experiences WHERE is_profitable) AS profitable_experiences,
    (SELECT count(*) FROM training_sessions) AS sessions,
    (SELECT count(*) FROM training_sessions WHERE status = 'succeeded') AS succeeded_sessions,
    (SELECT count(*) FROM training_steps) AS training_steps,
    (SELECT count(*) FROM jobs WHERE state = 'queued') AS queue_depth,
    (SELECT count(*) FROM jobs WHERE state = 'running') AS running_jobs,
    (SELECT count(*) FROM jobs WHERE state = 'failed') AS failed_jobs,
    -- RL replay logs not folded into experiences yet (rl_replay_fold; the views include them already).
    (SELECT count(*) FROM rl_replay_priority_log) AS rl_unfolded_write_backs,
    (SELECT count(*) FROM rl_replay_draws) AS rl_unfolded_batches,
    -- gradient_blobs is partitioned (one partition per session): its bytes are its partitions'.
    (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint
       FROM pg_partition_tree('gradient_blobs') WHERE isleaf) AS gradient_bytes,
    pg_total_relation_size('checkpoints') AS checkpoint_bytes;
