-- v_system_stats v0002 (migration 0013): one row per trainsrv table with its exact row count, size and health.
-- Changed from v0001: a partitioned table (gradient_blobs, one partition per session) counts the sizes and
-- the dead / live rows of all its partitions (pg_partition_tree); a plain table is its own one-leaf tree.
-- health: 'ok', 'needs_vacuum' (dead rows above 20 % of live ones) or 'never_analyzed'.
CREATE VIEW v_system_stats AS
WITH counts(table_name, row_count) AS (
    SELECT 'candles', count(*) FROM candles
    UNION ALL SELECT 'input_packages', count(*) FROM input_packages
    UNION ALL SELECT 'predictions', count(*) FROM predictions
    UNION ALL SELECT 'outcomes', count(*) FROM outcomes
    UNION ALL SELECT 'market_events', count(*) FROM market_events
    UNION ALL SELECT 'experiences', count(*) FROM experiences
    UNION ALL SELECT 'jobs', count(*) FROM jobs
    UNION ALL SELECT 'training_sessions', count(*) FROM training_sessions
    UNION ALL SELECT 'training_steps', count(*) FROM training_steps
    UNION ALL SELECT 'gradient_blobs', count(*) FROM gradient_blobs
    UNION ALL SELECT 'checkpoints', count(*) FROM checkpoints
),
trees AS (
    SELECT c.table_name,
           sum(pg_total_relation_size(p.relid)) AS total_bytes,
           sum(coalesce(s.n_dead_tup, 0)) AS dead_rows,
           sum(coalesce(s.n_live_tup, 0)) AS live_rows,
           max(greatest(s.last_vacuum, s.last_autovacuum)) AS last_vacuum_at,
           max(greatest(s.last_analyze, s.last_autoanalyze)) AS last_analyze_at
    FROM counts c
    CROSS JOIN LATERAL pg_partition_tree(format('%I', c.table_name)::regclass) p
    LEFT JOIN pg_stat_user_tables s ON s.relid = p.relid
    WHERE p.isleaf
    GROUP BY c.table_name
)
SELECT c.table_name,
       c.row_count,
       coalesce(t.total_bytes, 0)::bigint AS total_bytes,
       coalesce(t.dead_rows, 0)::bigint AS dead_rows,
       t.last_vacuum_at,
       t.last_analyze_at,
       CASE
           WHEN coalesce(t.dead_rows, 0) > 1000 AND t.dead_rows > 0.2 * greatest(t.live_rows, 1) THEN 'needs_vacuum'
           WHEN c.row_count > 0 AND t.last_analyze_at IS NULL THEN 'never_analyzed'
           ELSE 'ok'
       END AS health
FROM counts c
LEFT JOIN trees t ON t.table_name = c.table_name;
