-- Integrity checks behind `trainsrv verify` (app/session_replay/verify.py). Every query takes
-- :session_id, NULL for the whole database. Checksums are recomputed by the server (sha256()),
-- so blobs and checkpoint states never cross the wire just to be hashed.

-- name: blob_checksum_failures
-- Gradient chunks whose bytes no longer match their stored SHA-256.
SELECT session_id, step, param_name, chunk_index
FROM gradient_blobs
WHERE (CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint))
  AND sha256(data) <> checksum
ORDER BY session_id, step, param_name, chunk_index;

-- name: blob_missing_chunks
-- Chunks absent from a stored gradient (indices 0..chunk_count-1), or chunks disagreeing on chunk_count.
WITH params AS (
    SELECT session_id, step, param_name, max(chunk_count) AS chunk_count,
           count(DISTINCT chunk_count) AS counts, array_agg(chunk_index) AS present, count(*) AS n
    FROM gradient_blobs
    WHERE (CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint))
    GROUP BY session_id, step, param_name
)
SELECT p.session_id, p.step, p.param_name, g.chunk_index, p.chunk_count, false AS inconsistent
FROM params p
CROSS JOIN LATERAL generate_series(0, p.chunk_count - 1) AS g(chunk_index)
WHERE p.counts = 1 AND p.n <> p.chunk_count AND NOT g.chunk_index = ANY(p.present)
UNION ALL
SELECT session_id, step, param_name, NULL, chunk_count, true
FROM params
WHERE counts > 1
ORDER BY 1, 2, 3, 4;

-- name: step_gradient_counts
-- Steps whose blobs cover another number of parameters than the step row recorded; blobs without a step row.
WITH stored AS (
    SELECT session_id, step, array_agg(DISTINCT param_name) AS names
    FROM gradient_blobs
    WHERE (CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint))
    GROUP BY session_id, step
)
SELECT coalesce(s.session_id, b.session_id) AS session_id, coalesce(s.step, b.step) AS step,
       s.gradients_stored, coalesce(b.names, '{}') AS names, s.step IS NULL AS orphan
FROM (SELECT session_id, step, gradients_stored FROM training_steps
      WHERE CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint)) s
FULL JOIN stored b ON b.session_id = s.session_id AND b.step = s.step
WHERE s.step IS NULL OR coalesce(cardinality(b.names), 0) <> s.gradients_stored
ORDER BY 1, 2;

-- name: missing_steps
-- Gaps in a session's step numbers: steps run from 1 without holes, at least up to its last checkpoint.
WITH rows AS (
    SELECT session_id, step FROM training_steps
    WHERE CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint)
    UNION ALL
    SELECT session_id, max(step) + 1 FROM checkpoints  -- a sentinel one past the last checkpoint
    WHERE CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint)
    GROUP BY session_id
)
SELECT session_id, prev + 1 AS first_missing, step - 1 AS last_missing
FROM (SELECT session_id, step, lag(step, 1, 0) OVER (PARTITION BY session_id ORDER BY step) AS prev
      FROM rows) s
WHERE step > prev + 1
ORDER BY session_id, first_missing;

-- name: sessions_without_start
-- Sessions with recorded steps but no checkpoint at step 0: nothing can be replayed from the start.
SELECT t.id AS session_id
FROM training_sessions t
WHERE (CAST(:session_id AS bigint) IS NULL OR t.id = CAST(:session_id AS bigint))
  AND EXISTS (SELECT 1 FROM training_steps s WHERE s.session_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.session_id = t.id AND c.step = 0)
ORDER BY t.id;

-- name: checkpoint_hash_failures
-- Checkpoints whose stored state no longer matches its content hash.
SELECT id, session_id, step
FROM checkpoints
WHERE (CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint))
  AND sha256(state) <> content_hash
ORDER BY session_id, step;

-- name: checkpoint_ids
-- Every checkpoint to re-hash in Python (parameters and optimizer state), by session and step.
SELECT c.id, c.session_id, c.step
FROM checkpoints c
WHERE CAST(:session_id AS bigint) IS NULL OR c.session_id = CAST(:session_id AS bigint)
ORDER BY c.session_id, c.step;

-- name: counts
-- How many rows each check covers (the denominator of the verification report).
SELECT (SELECT count(*) FROM gradient_blobs
        WHERE CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint)) AS gradient_chunks,
       (SELECT count(*) FROM training_steps
        WHERE CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint)) AS steps,
       (SELECT count(*) FROM checkpoints
        WHERE CAST(:session_id AS bigint) IS NULL OR session_id = CAST(:session_id AS bigint)) AS checkpoints;

-- name: packages_page
-- A page of input packages (keyset on id) to re-verify against their data_hash.
SELECT id, payload, data_hash
FROM input_packages
WHERE id > :after
ORDER BY id
LIMIT :limit;

-- name: session_package_ids
-- The input packages a session trained on: CNN batches hold prediction ids, RL batches experience ids.
SELECT DISTINCT package_id
FROM (
    SELECT p.package_id
    FROM training_steps s
    CROSS JOIN LATERAL unnest(s.batch_ids) AS b(id)
    JOIN training_sessions t ON t.id = s.session_id AND t.model_kind = 'cnn'
    JOIN predictions p ON p.id = b.id
    WHERE s.session_id = :session_id
    UNION ALL
    SELECT unnest(ARRAY[e.state_package_id, e.next_state_package_id])
    FROM training_steps s
    CROSS JOIN LATERAL unnest(s.batch_ids) AS b(id)
    JOIN training_sessions t ON t.id = s.session_id AND t.model_kind = 'rl'
    JOIN experiences e ON e.id = b.id
    WHERE s.session_id = :session_id
) used
WHERE package_id IS NOT NULL
ORDER BY package_id;

-- name: package_payloads
-- Payloads and hashes of the given input packages (the session-scoped package check).
SELECT id, payload, data_hash
FROM input_packages
WHERE id = ANY(CAST(:ids AS bigint[]))
ORDER BY id;

-- name: step_blobs
-- Gradient chunks of steps first..last of one session in replay order (fetched as binary results).
SELECT step, param_name, chunk_index, chunk_count, dtype, shape, codec, checksum, data
FROM gradient_blobs
WHERE session_id = :session_id AND step BETWEEN :first AND :last
ORDER BY step, param_name, chunk_index;
