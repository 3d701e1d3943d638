-- v_system_stats v0001: one row per trainsrv table with its exact row count, size and health.
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
)
SELECT c.table_name,
       c.row_count,
       pg_total_relation_size(format('%I', c.table_name)::regclass) AS total_bytes,
       coalesce(s.n_dead_tup, 0) AS dead_rows,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum_at,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze_at,
       CASE
           WHEN coalesce(s.n_dead_tup, 0) > 1000 AND s.n_dead_tup > 0.2 * greatest(s.n_live_tup, 1) THEN 'needs_vacuum'
           WHEN c.row_count > 0 AND greatest(s.last_analyze, s.last_autoanalyze) IS NULL THEN 'never_analyzed'
           ELSE 'ok'
       END AS health
FROM counts c
LEFT JOIN pg_stat_user_tables s ON s.relname = c.table_name AND s.schemaname = current_schema();
