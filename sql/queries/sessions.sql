-- name: list
-- Training sessions, newest first, with what v_session_value says each is worth (optionally one model kind / status).
SELECT v.session_id, v.model_kind, v.model_name, s.config ->> 'symbol' AS symbol, v.status, v.started_at,
       v.duration_s, v.steps, v.final_loss_raw, v.training_value, v.eval_accuracy, v.eval_baseline_accuracy,
       v.eval_total_profit, v.beats_baseline, v.gradient_bytes, v.checkpoints
FROM v_session_value v
JOIN training_sessions s ON s.id = v.session_id
WHERE (CAST(:kind AS text) IS NULL OR v.model_kind = :kind)
  AND (CAST(:status AS text) IS NULL OR v.status = :status)
ORDER BY v.session_id DESC
LIMIT :limit;

-- name: show
-- Everything v_session_value says about the given sessions, with their symbol, job, error, metrics and config.
SELECT v.*, s.config ->> 'symbol' AS symbol, s.job_id, s.seed, s.torch_version, s.trainsrv_version, s.error,
       s.metrics, s.config
FROM v_session_value v
JOIN training_sessions s ON s.id = v.session_id
WHERE v.session_id = ANY(:ids)
ORDER BY array_position(:ids, v.session_id);
