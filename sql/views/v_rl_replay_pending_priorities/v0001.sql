-- v_rl_replay_pending_priorities v0001: priorities written back and not yet folded into experiences.priority
-- (rl_replay_priority_log: one row per write-back; rl_replay_fold writes them into experiences), the latest
-- per experience. v_rl_replay_weights uses them, so every view shows the current priority.
CREATE VIEW v_rl_replay_pending_priorities AS
SELECT DISTINCT ON (u.experience_id) u.experience_id, u.priority, l.written_at
FROM rl_replay_priority_log l
CROSS JOIN LATERAL unnest(l.experience_ids, l.priorities) AS u(experience_id, priority)
ORDER BY u.experience_id, l.id DESC;
