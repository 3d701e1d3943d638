-- Completeness and blob-layout checks behind `trainsrv verify` (app/trainer/verify.py), beside the
-- checksum checks of replay_session.sql. Every query takes :session_id, NULL for the whole database.

-- name: session_extents
-- Each session's status, metrics and checkpoint interval, with the steps and checkpoints it has stored.
SELECT t.id AS session_id, t.status, t.metrics, t.config,
       (SELECT count(*) FROM training_steps s WHERE s.session_id = t.id) AS steps_stored,
       (SELECT max(s.step) FROM training_steps s WHERE s.session_id = t.id) AS last_step,
       ARRAY(SELECT c.step FROM checkpoints c WHERE c.session_id = t.id ORDER BY c.step) AS checkpoint_steps
FROM training_sessions t
WHERE t.status = 'succeeded' AND (CAST(:session_id AS bigint) IS NULL OR t.id = CAST(:session_id AS bigint))
ORDER BY t.id;

-- name: blob_layouts
-- The distinct layouts (dtype, shape, codec, bytes per step) of each parameter's stored gradients, with their steps.
WITH per_step AS (
    SELECT session_id, step, param_name, min(dtype) AS dtype, min(shape) AS shape, min(codec) AS codec,
           sum(byte_length)::bigint AS bytes
    FROM gradient_blobs
    WHERE CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint)
    GROUP BY session_id, step, param_name
)
SELECT session_id, param_name, dtype, shape, codec, bytes, count(*) AS steps, min(step) AS first_step
FROM per_step
GROUP BY session_id, param_name, dtype, shape, codec, bytes
ORDER BY session_id, param_name, first_step;
