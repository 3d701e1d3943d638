-- name: system_stats
-- Per-table row counts, sizes and health from the v_system_stats view.
SELECT table_name, row_count, total_bytes, dead_rows, last_vacuum_at, last_analyze_at, health
FROM v_system_stats
ORDER BY table_name;
