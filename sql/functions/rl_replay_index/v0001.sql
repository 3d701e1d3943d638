-- rl_replay_index v0001: the sampling index behind profit-weighted prioritized replay.
--
-- Design (exact and O(batch) per sample, O(changed rows) per update):
--   * every replayable experience (a row of v_rl_replay) has one row in rl_replay_slots holding
--     its sample_weight w, its symbol, class (is_profitable) and its bucket k = floor(log2 w), so that
--     2^k <= w < 2^(k+1);
--   * inside a (symbol, class, bucket) the slots are dense, 0 .. n-1, so "a uniform row of the bucket"
--     is one index probe on (symbol, is_profitable, bucket, slot);
--   * rl_replay_buckets holds n per (symbol, class, bucket) and the running weight sum.
-- A draw picks a bucket with probability proportional to n * 2^(k+1) (exact integers times
-- powers of two), a uniform slot in it, and accepts the row with probability w / 2^(k+1) >= 1/2.
-- The accepted rows are then distributed exactly as w / sum(w) (bucketed rejection sampling).
--
-- The triggers installed by migration 0006 call rl_replay_add() after inserts, rl_replay_sync() after
-- updates and deletes of experiences and after a package's is_valid changes, and rl_replay_rebuild() after the
-- config's alpha / profit_boost change, so every writer (Python, plain SQL) keeps the index right.
-- Writers serialise on the rl_replay_config row; samplers read one consistent snapshot.

-- The bucket of a weight: 2^bucket <= weight < 2^(bucket + 1), exactly (ln / ln 2 may round).
CREATE OR REPLACE FUNCTION rl_replay_bucket(weight double precision)
RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE
               WHEN weight >= power(2::float8, t.k + 1) THEN t.k + 1
               WHEN weight < power(2::float8, t.k) THEN t.k - 1
               ELSE t.k
           END
    FROM (SELECT floor(ln(weight) / ln(2::float8))::integer AS k) AS t
$$;

-- Bring the index rows of the given experiences in line with v_rl_replay.
-- Per touched bucket: rows leaving it (moved to another bucket, or no longer replayable) leave
-- holes; the rows beyond the bucket's new end, then the arriving rows, fill the holes in slot
-- order, so slots stay dense 0 .. n-1. Rows may briefly share a slot inside the statement; the
-- unique constraint on (symbol, is_profitable, bucket, slot) is DEFERRABLE so it is checked at its end.
CREATE OR REPLACE FUNCTION rl_replay_sync(changed bigint[])
RETURNS void
LANGUAGE plpgsql
-- Every row touched is found by key; the CTE estimates are guesses and must never tempt the
-- planner into scanning the million-row index (a merge or hash join over a seq scan).
SET enable_seqscan = off
SET enable_mergejoin = off
AS $$
DECLARE
    del_ids bigint[];
    mv_ids bigint[]; mv_symbol text[]; mv_class boolean[]; mv_bucket integer[]; mv_slot integer[]; mv_weight float8[];
    new_ids bigint[]; new_symbol text[]; new_class boolean[]; new_bucket integer[]; new_slot integer[]; new_weight float8[];
    rw_ids bigint[]; rw_weight float8[];
    b_symbol text[]; b_class boolean[]; b_bucket integer[]; b_n bigint[]; b_delta float8[];
BEGIN
    IF changed IS NULL OR cardinality(changed) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM rl_replay_config WHERE id = 1 FOR UPDATE;
    WITH ids AS (
        SELECT DISTINCT u.id FROM unnest(changed) AS u(id)
    ), want AS MATERIALIZED (
        SELECT v.id, v.symbol, v.is_profitable, rl_replay_bucket(v.sample_weight) AS bucket, v.sample_weight AS weight
        FROM ids JOIN v_rl_replay v ON v.id = ids.id
    ), cur AS MATERIALIZED (
        SELECT s.experience_id AS id, s.symbol, s.is_profitable, s.bucket, s.slot, s.weight
        FROM ids JOIN rl_replay_slots s ON s.experience_id = ids.id
    ), leaving AS MATERIALIZED (
        SELECT c.* FROM cur c LEFT JOIN want w ON w.id = c.id
        WHERE w.id IS NULL OR w.symbol <> c.symbol OR w.is_profitable <> c.is_profitable OR w.bucket <> c.bucket
    ), arriving AS MATERIALIZED (
        SELECT w.*, c.id IS NULL AS is_new FROM want w LEFT JOIN cur c ON c.id = w.id
        WHERE c.id IS NULL OR w.symbol <> c.symbol OR w.is_profitable <> c.is_profitable OR w.bucket <> c.bucket
    ), staying AS MATERIALIZED (
        SELECT w.id, w.symbol, w.is_profitable, w.bucket, w.weight, w.weight - c.weight AS delta
        FROM want w JOIN cur c ON c.id = w.id AND c.symbol = w.symbol AND c.is_profitable = w.is_profitable AND c.bucket = w.bucket
    ), sized AS MATERIALIZED (
        SELECT d.symbol, d.is_profitable, d.bucket, coalesce(b.n, 0) AS n_old, coalesce(b.n, 0) + d.dn AS n_new, d.dw
        FROM (SELECT x.symbol, x.is_profitable, x.bucket, sum(x.dn) AS dn, sum(x.dw) AS dw
              FROM (SELECT symbol, is_profitable, bucket, -1 AS dn, -weight AS dw FROM leaving
                    UNION ALL SELECT symbol, is_profitable, bucket, 1, weight FROM arriving
                    UNION ALL SELECT symbol, is_profitable, bucket, 0, delta FROM staying) AS x
              GROUP BY 1, 2, 3) AS d
        LEFT JOIN rl_replay_buckets b ON b.symbol = d.symbol AND b.is_profitable = d.is_profitable AND b.bucket = d.bucket
    ), holes AS (
        -- Slots freed below the new end, in order; a bucket that grows also gets n_old, n_old + 1, ...
        SELECT l.symbol, l.is_profitable, l.bucket, l.slot,
               row_number() OVER (PARTITION BY l.symbol, l.is_profitable, l.bucket ORDER BY l.slot) AS rn
        FROM leaving l JOIN sized z ON z.symbol = l.symbol AND z.is_profitable = l.is_profitable AND z.bucket = l.bucket
        WHERE l.slot < z.n_new
    ), hole_counts AS (
        SELECT symbol, is_profitable, bucket, count(*) AS freed FROM holes GROUP BY 1, 2, 3
    ), fillers AS (
        SELECT f.id, f.symbol, f.is_profitable, f.bucket, f.weight, f.is_new,
               row_number() OVER (PARTITION BY f.symbol, f.is_profitable, f.bucket ORDER BY f.ord, f.slot, f.id) AS rn
        FROM (SELECT t.experience_id AS id, z.symbol, z.is_profitable, z.bucket, coalesce(st.weight, t.weight) AS weight,
                     false AS is_new, 0 AS ord, t.slot
              FROM sized z
              CROSS JOIN LATERAL (
                  SELECT s.experience_id, s.slot, s.weight FROM rl_replay_slots s
                  WHERE s.symbol = z.symbol AND s.is_profitable = z.is_profitable AND s.bucket = z.bucket AND s.slot >= z.n_new
                  OFFSET 0  -- keep it a per-bucket index range scan
              ) AS t
              LEFT JOIN staying st ON st.id = t.experience_id
              WHERE NOT EXISTS (SELECT 1 FROM leaving l WHERE l.id = t.experience_id)
              UNION ALL
              SELECT a.id, a.symbol, a.is_profitable, a.bucket, a.weight, a.is_new, 1, 0 FROM arriving a) AS f
    ), placed AS MATERIALIZED (
        SELECT f.id, f.symbol, f.is_profitable, f.bucket, f.weight, f.is_new,
               coalesce(h.slot, (z.n_old + f.rn - coalesce(c.freed, 0) - 1)::integer) AS slot
        FROM fillers f
        JOIN sized z ON z.symbol = f.symbol AND z.is_profitable = f.is_profitable AND z.bucket = f.bucket
        LEFT JOIN holes h ON h.symbol = f.symbol AND h.is_profitable = f.is_profitable AND h.bucket = f.bucket AND h.rn = f.rn
        LEFT JOIN hole_counts c ON c.symbol = f.symbol AND c.is_profitable = f.is_profitable AND c.bucket = f.bucket
    )
    -- Plan first (no writes), as arrays: their sizes are known to the planner of the writes below.
    SELECT d.ids, m.ids, m.symbols, m.classes, m.buckets, m.slots, m.weights,
           n.ids, n.symbols, n.classes, n.buckets, n.slots, n.weights, r.ids, r.weights,
           b.symbols, b.classes, b.buckets, b.sizes, b.deltas
    INTO del_ids, mv_ids, mv_symbol, mv_class, mv_bucket, mv_slot, mv_weight,
         new_ids, new_symbol, new_class, new_bucket, new_slot, new_weight, rw_ids, rw_weight,
         b_symbol, b_class, b_bucket, b_n, b_delta
    FROM (SELECT array_agg(l.id) AS ids FROM leaving l
          WHERE NOT EXISTS (SELECT 1 FROM placed p WHERE p.id = l.id)) AS d,
         (SELECT array_agg(id) AS ids, array_agg(symbol) AS symbols, array_agg(is_profitable) AS classes, array_agg(bucket) AS buckets,
                 array_agg(slot) AS slots, array_agg(weight) AS weights
          FROM placed WHERE NOT is_new) AS m,
         (SELECT array_agg(id) AS ids, array_agg(symbol) AS symbols, array_agg(is_profitable) AS classes, array_agg(bucket) AS buckets,
                 array_agg(slot) AS slots, array_agg(weight) AS weights
          FROM placed WHERE is_new) AS n,
         (SELECT array_agg(st.id) AS ids, array_agg(st.weight) AS weights FROM staying st
          WHERE st.delta <> 0 AND NOT EXISTS (SELECT 1 FROM placed p WHERE p.id = st.id)) AS r,
         (SELECT array_agg(symbol) AS symbols, array_agg(is_profitable) AS classes, array_agg(bucket) AS buckets, array_agg(n_new) AS sizes,
                 array_agg(dw) AS deltas
          FROM sized) AS b;

    -- Then write, all in one statement (the slot uniqueness is checked at its end).
    WITH removed AS (
        DELETE FROM rl_replay_slots WHERE experience_id = ANY (coalesce(del_ids, '{}'))
    ), moved AS (
        UPDATE rl_replay_slots s
        SET symbol = m.sym, is_profitable = m.c, bucket = m.k, slot = m.slot, weight = m.w
        FROM unnest(mv_ids, mv_symbol, mv_class, mv_bucket, mv_slot, mv_weight) AS m(id, sym, c, k, slot, w)
        WHERE s.experience_id = m.id
    ), added AS (
        INSERT INTO rl_replay_slots (experience_id, symbol, is_profitable, bucket, slot, weight)
        SELECT * FROM unnest(new_ids, new_symbol, new_class, new_bucket, new_slot, new_weight)
    ), reweighted AS (
        UPDATE rl_replay_slots s SET weight = r.w
        FROM unnest(rw_ids, rw_weight) AS r(id, w)
        WHERE s.experience_id = r.id
    )
    INSERT INTO rl_replay_buckets AS b (symbol, is_profitable, bucket, n, weight_sum)
    SELECT * FROM unnest(b_symbol, b_class, b_bucket, b_n, b_delta)
    ON CONFLICT (symbol, is_profitable, bucket) DO UPDATE
    SET n = excluded.n,
        weight_sum = CASE WHEN excluded.n = 0 THEN 0 ELSE b.weight_sum + excluded.weight_sum END;
END
$$;

-- Index experiences that are new to the index (the insert path: nothing leaves, rows only append).
CREATE OR REPLACE FUNCTION rl_replay_add(added bigint[])
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM 1 FROM rl_replay_config WHERE id = 1 FOR UPDATE;
    WITH arrive AS MATERIALIZED (
        SELECT v.id, v.symbol, v.is_profitable, rl_replay_bucket(v.sample_weight) AS bucket, v.sample_weight AS weight,
               row_number() OVER (PARTITION BY v.symbol, v.is_profitable, rl_replay_bucket(v.sample_weight) ORDER BY v.id) AS rn
        FROM v_rl_replay v
        WHERE v.id IN (SELECT unnest(added))
    ), per_bucket AS MATERIALIZED (
        SELECT symbol, is_profitable, bucket, count(*) AS cnt, sum(weight) AS weight FROM arrive GROUP BY 1, 2, 3
    ), grown AS (
        INSERT INTO rl_replay_buckets AS b (symbol, is_profitable, bucket, n, weight_sum)
        SELECT symbol, is_profitable, bucket, cnt, weight FROM per_bucket
        ON CONFLICT (symbol, is_profitable, bucket)
        DO UPDATE SET n = b.n + excluded.n, weight_sum = b.weight_sum + excluded.weight_sum
        RETURNING b.symbol, b.is_profitable, b.bucket, b.n
    )
    INSERT INTO rl_replay_slots (experience_id, symbol, is_profitable, bucket, slot, weight)
    SELECT a.id, a.symbol, a.is_profitable, a.bucket, (g.n - p.cnt + a.rn - 1)::integer, a.weight
    FROM arrive a
    JOIN per_bucket p ON p.symbol = a.symbol AND p.is_profitable = a.is_profitable AND p.bucket = a.bucket
    JOIN grown g ON g.symbol = a.symbol AND g.is_profitable = a.is_profitable AND g.bucket = a.bucket;
END
$$;

-- Rebuild the whole index from v_rl_replay (after alpha / profit_boost change; maintenance).
CREATE OR REPLACE FUNCTION rl_replay_rebuild()
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    size bigint;
BEGIN
    PERFORM 1 FROM rl_replay_config WHERE id = 1 FOR UPDATE;
    DELETE FROM rl_replay_slots;
    DELETE FROM rl_replay_buckets;
    INSERT INTO rl_replay_slots (experience_id, symbol, is_profitable, bucket, slot, weight)
    SELECT t.id, t.symbol, t.is_profitable, t.bucket,
           (row_number() OVER (PARTITION BY t.symbol, t.is_profitable, t.bucket ORDER BY t.id) - 1)::integer,
           t.weight
    FROM (SELECT v.id, v.symbol, v.is_profitable, rl_replay_bucket(v.sample_weight) AS bucket, v.sample_weight AS weight
          FROM v_rl_replay v) AS t;
    INSERT INTO rl_replay_buckets (symbol, is_profitable, bucket, n, weight_sum)
    SELECT symbol, is_profitable, bucket, count(*), sum(weight) FROM rl_replay_slots GROUP BY 1, 2, 3;
    UPDATE rl_replay_config
    SET max_priority = greatest(max_priority, coalesce((SELECT max(priority) FROM experiences), max_priority))
    WHERE id = 1;
    SELECT coalesce(sum(n), 0) INTO size FROM rl_replay_buckets;
    RETURN size;
END
$$;

-- Raise the running maximum priority (new experiences enter at it).
CREATE OR REPLACE FUNCTION rl_replay_raise_max(candidate double precision)
RETURNS void
LANGUAGE sql
AS $$
    UPDATE rl_replay_config SET max_priority = candidate
    WHERE id = 1 AND candidate IS NOT NULL AND candidate > max_priority
$$;

-- BEFORE INSERT (row, only when priority IS NULL): a new experience enters at the current maximum.
CREATE OR REPLACE FUNCTION rl_replay_default_priority()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    SELECT max_priority INTO NEW.priority FROM rl_replay_config WHERE id = 1;
    RETURN NEW;
END
$$;

-- AFTER INSERT (statement): index the new experiences.
CREATE OR REPLACE FUNCTION rl_replay_on_insert()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM rl_replay_raise_max((SELECT max(priority) FROM new_rows));
    PERFORM rl_replay_add(ARRAY(SELECT id FROM new_rows));
    RETURN NULL;
END
$$;

-- AFTER UPDATE (statement): re-index the experiences whose replay inputs changed. Updates that
-- only touch bookkeeping (times_sampled, last_sampled_at) find nothing to do.
CREATE OR REPLACE FUNCTION rl_replay_on_update()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    changed bigint[];
BEGIN
    SELECT array_agg(n.id) INTO changed
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE (n.priority, n.is_profitable, n.symbol, n.state_package_id, n.next_state_package_id, n.done)
          IS DISTINCT FROM (o.priority, o.is_profitable, o.symbol, o.state_package_id, o.next_state_package_id, o.done);
    IF changed IS NOT NULL THEN
        PERFORM rl_replay_raise_max((SELECT max(priority) FROM new_rows));
        PERFORM rl_replay_sync(changed);
    END IF;
    RETURN NULL;
END
$$;

-- AFTER DELETE (statement): drop the deleted experiences from the index.
CREATE OR REPLACE FUNCTION rl_replay_on_delete()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM rl_replay_sync(ARRAY(SELECT id FROM old_rows));
    RETURN NULL;
END
$$;

-- AFTER TRUNCATE of experiences: the index is empty too.
CREATE OR REPLACE FUNCTION rl_replay_on_truncate()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM rl_replay_slots;
    DELETE FROM rl_replay_buckets;
    RETURN NULL;
END
$$;

-- AFTER UPDATE OF is_valid ON input_packages (row, when it changed): re-index its experiences.
CREATE OR REPLACE FUNCTION rl_replay_on_package_validity()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM rl_replay_sync(ARRAY(
        SELECT e.id FROM experiences e
        WHERE e.state_package_id = NEW.id OR e.next_state_package_id = NEW.id));
    RETURN NULL;
END
$$;

-- AFTER UPDATE OF alpha, profit_boost ON rl_replay_config: every weight changed.
CREATE OR REPLACE FUNCTION rl_replay_on_config()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM rl_replay_rebuild();
    RETURN NULL;
END
$$;
