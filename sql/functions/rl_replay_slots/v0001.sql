-- rl_replay_slots v0001: the sampling index behind profit-weighted prioritized replay: its geometry
-- (buckets, weights, acceptance) and its upkeep (slots added, moved, re-weighed, rebuilt; the triggers that keep
-- it equal to v_rl_replay).
-- Split by concern from rl_replay_index v0003 (migration 0016), definitions unchanged: the index's
-- geometry and upkeep are in rl_replay_slots, the sampler in rl_replay_draw, the priority write-back and
-- the fold in rl_replay_write_back. A new version copies only the file of the concern that changes.
--
-- Design (exact; O(batch) per sample, O(changed rows) per update, independent of the table size):
--   * rl_replay_buckets: one row per (symbol, class, bucket) with a small integer id, its row count n
--     and weight sum. Bucket k has the top rl_replay_bucket_top(k) = 2^((k+1)/4) (quarter octaves). A row
--     is placed in its natural bucket, rl_replay_bucket(w) (2^(k/4) <= w < 2^((k+1)/4)), and stays there
--     while a new weight still fits (rl_replay_fits: top / 4 <= w < top; for the write-back,
--     rl_replay_tolerates: top / 16 <= w < top); only then does it move to its new natural bucket;
--   * rl_replay_slots: every replayable experience (a row of v_rl_replay) with its bucket id, its
--     sample_weight w, a slot that is dense inside the bucket, 0 .. n-1, and a copy of the fields the
--     trainer needs (priority, packages, action, reward, done, optimal action), so that one probe of the
--     (bucket_id, slot) index both picks a uniform row of a bucket and fetches it;
--   * rl_replay_draws: draws not yet counted in experiences.times_sampled / last_sampled_at, one row per
--     batch; rl_replay_priority_log: priorities written back and not yet in experiences.priority, one row
--     per write-back (the latest entry of an experience wins). rl_replay_fold() moves both into experiences,
--     in one UPDATE per fold (one row version per experience and fold, not one per step); v_rl_replay_weights
--     and the views on it add what is pending, so SQL readers always see exact priorities and counts.
-- A draw picks a bucket with probability proportional to n * top (known exactly from the bucket rows),
-- a uniform slot in it, and accepts the row with probability w / top. Accepted rows are distributed
-- exactly as w / sum(w) (bucketed rejection sampling) whatever w / top is, as long as w < top; the
-- tolerance only costs probes: w / top >= 1/16 for any row, >= 1/4 once folded, > 2^(-1/4) ~ 0.84 in its
-- natural bucket. Why two octaves: with priorities that jump by octaves at every write-back (|TD error|), a
-- simulation of many write-backs per row gave a steady mean acceptance of 0.84 / 0.63 / 0.43 / 0.31 for windows
-- of 1 / 2 / 3 / 4 octaves and no fold; a fold to two octaves behind a four-octave write-back keeps it near 0.63
-- with half the moves of one octave, and the sampler's time hardly changes above acceptance 0.6. rl_replay_draw() probes candidates lazily in draw order and stops at the last accepted
-- row it needs: a batch costs about batch / acceptance index probes and no other table.
--
-- Triggers (migration 0006) keep the index equal to v_rl_replay whatever client writes:
--   * insert: rl_replay_add() appends the new rows to their buckets;
--   * update: bookkeeping-only updates (times_sampled, last_sampled_at, ...) return at once; a
--     priority-only change is re-weighed through v_rl_replay_weights, without reading packages
--     (replayability cannot change with the priority: rl_replay_reweigh); any other change of a replay
--     input or of a copied field goes through v_rl_replay (rl_replay_sync). A priority written directly
--     while write-backs of the row are pending is logged after them, so that it wins;
--   * delete, package validity flips: rl_replay_sync(); config change (alpha, boost): rl_replay_rebuild().
-- rl_replay_write_back() re-weighs the index rows of the priorities it logs itself: in place when the new
-- weight is tolerated, through rl_replay_apply() otherwise. rl_replay_fold() marks its UPDATE of experiences
-- so that the update trigger skips it (the index already holds those priorities). rl_replay_apply() plans
-- and does the re-slotting, set-based, in one statement.
-- Writers serialise on the rl_replay_config row (taken after the rows they update, in every path);
-- samplers read one consistent snapshot and never wait.
-- The copied fields are listed, in this order, wherever the index is written: rl_replay_apply,
-- rl_replay_sync, rl_replay_add, rl_replay_rebuild (and checked by the replay.index_mismatches query).

-- The upper bound of bucket k: every weight w in bucket k has w < rl_replay_bucket_top(k).
CREATE OR REPLACE FUNCTION rl_replay_bucket_top(bucket integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN power(2::float8, (bucket + 1)::float8 / 4);

-- The bucket of a weight, exactly as rl_replay_bucket_top draws the bounds (log2 may round by one). A plain
-- expression, not STRICT, so that the planner inlines it: the write-back path calls it once per row.
CREATE OR REPLACE FUNCTION rl_replay_bucket(weight double precision)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN floor(4 * ln(weight) / ln(2::float8))::integer
       + CASE WHEN weight >= rl_replay_bucket_top(floor(4 * ln(weight) / ln(2::float8))::integer) THEN 1
              WHEN weight < rl_replay_bucket_top(floor(4 * ln(weight) / ln(2::float8))::integer - 1) THEN -1
              ELSE 0 END;

-- Whether a weight may sit in bucket k: rl_replay_bucket_top(k - 8) <= w < rl_replay_bucket_top(k), two octaves
-- below the top (so acceptance w / top >= 1/4). The natural bucket rl_replay_bucket(w) always fits. Inlined.
CREATE OR REPLACE FUNCTION rl_replay_fits(weight double precision, bucket integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN weight < rl_replay_bucket_top(bucket) AND weight >= rl_replay_bucket_top(bucket - 8);

-- The write-back's wider window: a row may stay while rl_replay_bucket_top(k - 16) <= w < rl_replay_bucket_top(k),
-- four octaves below the top (acceptance >= 1/16, the bound rl_replay_draw's consistency check relies on).
-- rl_replay_fold() brings such rows back within rl_replay_fits. Inlined.
CREATE OR REPLACE FUNCTION rl_replay_tolerates(weight double precision, bucket integer)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN weight < rl_replay_bucket_top(bucket) AND weight >= rl_replay_bucket_top(bucket - 16);

-- The share of the sampler's probes that are accepted over the whole index: its weight over its probe mass
-- n * top. What the fold's compaction threshold is compared with (and what the bench reports).
CREATE OR REPLACE FUNCTION rl_replay_acceptance()
RETURNS double precision
LANGUAGE sql STABLE
RETURN (SELECT sum(b.weight_sum) / nullif(sum(b.n * rl_replay_bucket_top(b.bucket)), 0)
        FROM rl_replay_buckets b WHERE b.n > 0);

-- The profit-weighted prioritized-replay weight (Schaul et al. 2016): priority^alpha, times the profit boost
-- for profitable experiences. The one definition: v_rl_replay_weights and the write-back call it. Inlined.
CREATE OR REPLACE FUNCTION rl_replay_weight(priority double precision, is_profitable boolean,
                                            alpha double precision, profit_boost double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN power(priority, alpha) * CASE WHEN is_profitable THEN profit_boost ELSE 1.0::float8 END;

-- Make sure these (symbol, class, bucket) rows exist (NULL symbols are skipped). Bucket rows are never
-- deleted, only emptied, so a bucket id, once given, stays valid.
CREATE OR REPLACE FUNCTION rl_replay_ensure_buckets(p_symbols text[], p_classes boolean[], p_buckets integer[])
RETURNS void
LANGUAGE sql
AS $$
    INSERT INTO rl_replay_buckets (symbol, is_profitable, bucket, n, weight_sum)
    SELECT DISTINCT w.symbol, w.class, w.bucket, 0, 0
    FROM unnest(p_symbols, p_classes, p_buckets) AS w(symbol, class, bucket)
    WHERE w.symbol IS NOT NULL
    ON CONFLICT (symbol, is_profitable, bucket) DO NOTHING
$$;

-- Bring the index rows of the given experiences (ids distinct) to the wanted state, set-based: each comes with
-- its symbol, class, sample weight and priority, the weight NULL when it is not replayable. With
-- p_indexed_only, ids without an index row are left alone (a priority change cannot make a row replayable).
-- A row still indexed under the same symbol and class whose new weight fits its bucket (rl_replay_fits) stays
-- there and only changes weight / priority (a HOT update); any other replayable row goes to its natural
-- bucket (created when missing). New index rows copy their other fields from experiences; indexed rows keep
-- theirs. Per touched bucket, rows leaving it (moved, or no longer replayable) leave holes; the rows beyond
-- the bucket's new end, then the arriving rows, fill the holes below the new end in slot order, and the rest
-- append, so slots stay dense and distinct, 0 .. n-1 (rows pass through shared slots only inside the
-- statement). Plan and writes are one statement (the writes skipped when a target bucket is missing: it is
-- created and the statement runs again), so every part reads one snapshot and the writes find the rows the
-- plan read by ctid (a heap fetch, not a second primary-key descent). The caller holds the rl_replay_config
-- lock, so no other writer changes them meanwhile; a row not found anyway is an error.
CREATE OR REPLACE FUNCTION rl_replay_apply(p_ids bigint[], p_symbols text[], p_classes boolean[],
                                           p_weights double precision[], p_priorities double precision[],
                                           p_indexed_only boolean)
RETURNS void
LANGUAGE plpgsql
-- Every row touched is found by key or ctid (the tails with plain index scans, which also mark the dead index
-- entries that slot moves leave behind, which a bitmap scan would keep visiting). The CTE estimates are
-- guesses and must never tempt the planner into scanning the million-row index; the small sets join by hash.
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_mergejoin = off
AS $$
DECLARE
    done boolean;
    expected bigint;
    written bigint;
    m_symbols text[]; m_classes boolean[]; m_buckets integer[];
BEGIN
    FOR attempt IN 1 .. 2 LOOP  -- once more after creating buckets that did not exist yet
        -- One statement: the plan (CTEs up to "placed") and, unless a bucket is missing, the writes. Every CTE
        -- reads the statement's snapshot, so the writes find the rows the plan read.
        WITH old AS MATERIALIZED (
            -- Each row's index row (if any) and whether it stays in its bucket.
            SELECT c.*, s.ctid AS old_row, s.bucket_id AS old_bucket, s.slot AS old_slot, s.weight AS old_weight,
                   s.priority AS old_priority,
                   coalesce(ob.symbol = c.symbol AND ob.is_profitable = c.is_profitable
                            AND rl_replay_fits(c.new_weight, ob.bucket), false) AS stays
            FROM unnest(p_ids, p_symbols, p_classes, p_weights, p_priorities)
                AS c(id, symbol, is_profitable, new_weight, new_priority)
            LEFT JOIN rl_replay_slots s ON s.experience_id = c.id
            LEFT JOIN rl_replay_buckets ob ON ob.id = s.bucket_id
            WHERE s.experience_id IS NOT NULL OR NOT p_indexed_only
        ), change AS MATERIALIZED (
            SELECT t.*, t.new_bucket IS DISTINCT FROM t.old_bucket AS moves
            FROM (SELECT o.*, CASE WHEN o.stays THEN o.old_bucket ELSE nb.id END AS new_bucket,
                         NOT o.stays AND o.new_weight IS NOT NULL AND nb.id IS NULL AS missing
                  FROM old o
                  LEFT JOIN rl_replay_buckets nb
                         ON NOT o.stays AND nb.symbol = o.symbol AND nb.is_profitable = o.is_profitable
                        AND nb.bucket = rl_replay_bucket(o.new_weight)) AS t
            WHERE t.new_bucket IS DISTINCT FROM t.old_bucket OR t.new_weight <> t.old_weight
               OR t.new_priority <> t.old_priority OR t.missing
        ), go AS MATERIALIZED (
            SELECT NOT coalesce(bool_or(missing), false) AS ok FROM change
        ), sized AS MATERIALIZED (
            -- Per touched bucket: its size before and after, its weight change.
            SELECT d.bucket_id, b.n AS n_old, b.n + d.dn AS n_new, d.dw
            FROM (SELECT x.bucket_id, sum(x.dn) AS dn, sum(x.dw) AS dw
                  FROM (SELECT old_bucket AS bucket_id, -1 AS dn, -old_weight AS dw FROM change
                        WHERE moves AND old_bucket IS NOT NULL
                        UNION ALL
                        SELECT new_bucket, 1, new_weight FROM change WHERE moves AND new_bucket IS NOT NULL
                        UNION ALL
                        SELECT old_bucket, 0, new_weight - old_weight FROM change WHERE NOT moves) AS x
                  GROUP BY x.bucket_id) AS d
            JOIN rl_replay_buckets b ON b.id = d.bucket_id
        ), holes AS MATERIALIZED (
            -- Per touched bucket, also the slots that leaving rows free below its new end, in order.
            SELECT z.bucket_id, z.n_old, coalesce(h.slots, '{}') AS slots
            FROM sized z
            LEFT JOIN (SELECT c.old_bucket, array_agg(c.old_slot ORDER BY c.old_slot) AS slots
                       FROM change c JOIN sized z ON z.bucket_id = c.old_bucket
                       WHERE c.moves AND c.old_slot < z.n_new
                       GROUP BY c.old_bucket) AS h ON h.old_bucket = z.bucket_id
        ), fillers AS (
            -- The rows beyond a shrinking bucket's new end (those not leaving), then the arriving rows.
            SELECT t.experience_id AS id, t.ctid AS row, z.bucket_id, coalesce(c.new_weight, t.weight) AS weight,
                   coalesce(c.new_priority, t.priority) AS priority, 0 AS ord, t.slot
            FROM (SELECT * FROM sized WHERE n_new < n_old) AS z
            CROSS JOIN LATERAL (
                SELECT s.ctid, s.experience_id, s.slot, s.weight, s.priority FROM rl_replay_slots s
                WHERE s.bucket_id = z.bucket_id AND s.slot >= z.n_new AND s.slot < z.n_old
                OFFSET 0  -- keep it a per-bucket index range scan
            ) AS t
            LEFT JOIN change c ON c.id = t.experience_id
            WHERE c.id IS NULL OR NOT c.moves
            UNION ALL
            SELECT c.id, c.old_row, c.new_bucket, c.new_weight, c.new_priority, 1, 0
            FROM change c
            WHERE c.moves AND c.new_bucket IS NOT NULL
        ), placed AS MATERIALIZED (
            -- The k-th filler of a bucket takes its k-th hole, or appends after the old end once holes run out.
            SELECT f.id, f.row, f.bucket_id, f.weight, f.priority,
                   coalesce(h.slots[f.rn], h.n_old + f.rn - cardinality(h.slots) - 1)::integer AS slot
            FROM (SELECT fl.*, row_number() OVER (PARTITION BY fl.bucket_id ORDER BY fl.ord, fl.slot, fl.id) AS rn
                  FROM fillers fl) AS f
            JOIN holes h ON h.bucket_id = f.bucket_id
        ), rewrite AS MATERIALIZED (
            -- Index rows to rewrite: placed ones take their new bucket and slot; rows staying where they are
            -- only change weight / priority.
            SELECT row, bucket_id, slot, weight, priority FROM placed WHERE row IS NOT NULL
            UNION ALL
            SELECT c.old_row, c.old_bucket, c.old_slot, c.new_weight, c.new_priority FROM change c
            WHERE NOT c.moves AND NOT EXISTS (SELECT 1 FROM placed p WHERE p.id = c.id)
        ), removed AS (
            DELETE FROM rl_replay_slots s USING change c, go
            WHERE go.ok AND c.moves AND c.new_bucket IS NULL AND s.ctid = c.old_row
            RETURNING 1
        ), moved AS (
            UPDATE rl_replay_slots s
            SET bucket_id = m.bucket_id, slot = m.slot, weight = m.weight, priority = m.priority
            FROM rewrite m, go
            WHERE go.ok AND s.ctid = m.row
            RETURNING 1
        ), added AS (
            INSERT INTO rl_replay_slots (experience_id, bucket_id, slot, weight, priority, state_package_id,
                                         next_state_package_id, action, reward, done, optimal_action)
            SELECT p.id, p.bucket_id, p.slot, p.weight, p.priority, e.state_package_id, e.next_state_package_id,
                   e.action, e.reward, e.done, e.optimal_action
            FROM placed p JOIN experiences e ON e.id = p.id, go
            WHERE go.ok AND p.row IS NULL
        ), resized AS (
            UPDATE rl_replay_buckets b
            SET n = z.n_new, weight_sum = CASE WHEN z.n_new = 0 THEN 0 ELSE b.weight_sum + z.dw END
            FROM sized z, go
            WHERE go.ok AND b.id = z.bucket_id
        )
        SELECT go.ok,
               (SELECT count(*) FROM change c WHERE c.moves AND c.old_bucket IS NOT NULL AND c.new_bucket IS NULL)
               + (SELECT count(*) FROM rewrite),
               (SELECT count(*) FROM removed) + (SELECT count(*) FROM moved),
               k.symbols, k.classes, k.buckets
        INTO done, expected, written, m_symbols, m_classes, m_buckets
        FROM go,
             (SELECT array_agg(c.symbol) AS symbols, array_agg(c.is_profitable) AS classes,
                     array_agg(rl_replay_bucket(c.new_weight)) AS buckets
              FROM change c WHERE c.missing) AS k;
        EXIT WHEN done;
        IF attempt = 2 THEN
            RAISE EXCEPTION 'rl_replay_apply: bucket rows still missing after creating them';
        END IF;
        PERFORM rl_replay_ensure_buckets(m_symbols, m_classes, m_buckets);
    END LOOP;
    IF written <> expected THEN
        RAISE EXCEPTION 'rl_replay_apply: % of % index rows found by ctid: they changed under the write', written,
            expected;
    END IF;
END
$$;

-- Re-index experiences whose replay inputs or copied fields may have changed in any way: what to index
-- comes from v_rl_replay, the copied fields from experiences.
CREATE OR REPLACE FUNCTION rl_replay_sync(changed bigint[])
RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_mergejoin = off
AS $$
DECLARE
    ids bigint[]; symbols text[]; classes boolean[]; weights float8[]; priorities float8[];
BEGIN
    IF changed IS NULL OR cardinality(changed) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM rl_replay_config WHERE id = 1 FOR UPDATE;
    SELECT array_agg(u.id), array_agg(v.symbol), array_agg(v.is_profitable), array_agg(v.sample_weight),
           array_agg(v.priority)
    INTO ids, symbols, classes, weights, priorities
    FROM (SELECT DISTINCT c.id FROM unnest(changed) AS c(id)) AS u
    LEFT JOIN v_rl_replay v ON v.id = u.id;
    PERFORM rl_replay_apply(ids, symbols, classes, weights, priorities, false);
    UPDATE rl_replay_slots s
    SET state_package_id = e.state_package_id, next_state_package_id = e.next_state_package_id,
        action = e.action, reward = e.reward, done = e.done, optimal_action = e.optimal_action
    FROM experiences e
    WHERE s.experience_id = ANY (ids) AND e.id = s.experience_id
      AND (s.state_package_id, s.next_state_package_id, s.action, s.reward, s.done, s.optimal_action)
          IS DISTINCT FROM (e.state_package_id, e.next_state_package_id, e.action, e.reward, e.done, e.optimal_action);
END
$$;

-- Re-index experiences whose priority alone changed (ids distinct). Symbol, class, priority and weight come
-- from v_rl_replay_weights, the one definition of the weighting, which reads no package. Only indexed rows
-- matter: a row's replayability does not depend on its priority. The caller holds the rl_replay_config lock.
CREATE OR REPLACE FUNCTION rl_replay_reweigh(changed bigint[])
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    ids bigint[]; symbols text[]; classes boolean[]; weights float8[]; priorities float8[];
BEGIN
    SELECT array_agg(w.id), array_agg(w.symbol), array_agg(w.is_profitable), array_agg(w.sample_weight),
           array_agg(w.priority)
    INTO ids, symbols, classes, weights, priorities
    FROM unnest(changed) AS u(id)
    JOIN v_rl_replay_weights w ON w.id = u.id;
    PERFORM rl_replay_apply(ids, symbols, classes, weights, priorities, true);
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
               v.priority, v.state_package_id, v.next_state_package_id, v.action, v.reward, v.done, v.optimal_action
        FROM v_rl_replay v
        WHERE v.id IN (SELECT unnest(added))
    ), ranked AS MATERIALIZED (
        SELECT a.*, row_number() OVER (PARTITION BY a.symbol, a.is_profitable, a.bucket ORDER BY a.id) AS rn
        FROM arrive a
    ), per_bucket AS MATERIALIZED (
        SELECT symbol, is_profitable, bucket, count(*) AS cnt, sum(weight) AS weight FROM arrive GROUP BY 1, 2, 3
    ), grown AS (
        INSERT INTO rl_replay_buckets AS b (symbol, is_profitable, bucket, n, weight_sum)
        SELECT symbol, is_profitable, bucket, cnt, weight FROM per_bucket
        ON CONFLICT (symbol, is_profitable, bucket)
        DO UPDATE SET n = b.n + excluded.n, weight_sum = b.weight_sum + excluded.weight_sum
        RETURNING b.id, b.symbol, b.is_profitable, b.bucket, b.n
    )
    INSERT INTO rl_replay_slots (experience_id, bucket_id, slot, weight, priority, state_package_id,
                                 next_state_package_id, action, reward, done, optimal_action)
    SELECT a.id, g.id, (g.n - p.cnt + a.rn - 1)::integer, a.weight, a.priority, a.state_package_id,
           a.next_state_package_id, a.action, a.reward, a.done, a.optimal_action
    FROM ranked a
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
    WITH t AS MATERIALIZED (
        SELECT v.id, v.symbol, v.is_profitable, rl_replay_bucket(v.sample_weight) AS bucket, v.sample_weight AS weight,
               v.priority, v.state_package_id, v.next_state_package_id, v.action, v.reward, v.done, v.optimal_action
        FROM v_rl_replay v
    ), b AS (
        INSERT INTO rl_replay_buckets (symbol, is_profitable, bucket, n, weight_sum)
        SELECT symbol, is_profitable, bucket, count(*), sum(weight) FROM t GROUP BY 1, 2, 3
        RETURNING id, symbol, is_profitable, bucket
    )
    INSERT INTO rl_replay_slots (experience_id, bucket_id, slot, weight, priority, state_package_id,
                                 next_state_package_id, action, reward, done, optimal_action)
    SELECT t.id, b.id, (row_number() OVER (PARTITION BY b.id ORDER BY t.id) - 1)::integer, t.weight, t.priority,
           t.state_package_id, t.next_state_package_id, t.action, t.reward, t.done, t.optimal_action
    FROM t JOIN b ON b.symbol = t.symbol AND b.is_profitable = t.is_profitable AND b.bucket = t.bucket;
    UPDATE rl_replay_config
    SET max_priority = greatest(max_priority, coalesce((SELECT max(priority) FROM v_rl_replay_weights), max_priority))
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

-- AFTER UPDATE (statement): re-index the experiences whose replay inputs or copied fields changed. Updates
-- that only touch bookkeeping (times_sampled, last_sampled_at) find nothing to do and return, and so does
-- rl_replay_fold's UPDATE (marked with the statement's start time, which no other statement has). A priority
-- set here while write-backs of the row are still pending in rl_replay_priority_log is logged after them: it is
-- the latest, so v_rl_replay_weights shows it and the fold keeps it.
CREATE OR REPLACE FUNCTION rl_replay_on_update()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    reweigh bigint[];
    resync bigint[];
    top float8;
    set_ids bigint[];
    set_priorities float8[];
BEGIN
    IF current_setting('trainsrv.rl_replay_fold', true) = statement_timestamp()::text THEN
        RETURN NULL;   -- rl_replay_fold's own UPDATE: the index already holds what it writes
    END IF;
    SELECT array_agg(n.id) FILTER (WHERE NOT n.inputs_changed), array_agg(n.id) FILTER (WHERE n.inputs_changed),
           max(n.priority), array_agg(n.id) FILTER (WHERE n.priority_changed),
           array_agg(n.priority) FILTER (WHERE n.priority_changed)
    INTO reweigh, resync, top, set_ids, set_priorities
    FROM (SELECT n.id, n.priority, n.priority IS DISTINCT FROM o.priority AS priority_changed,
                 (n.is_profitable, n.symbol, n.state_package_id, n.next_state_package_id, n.done, n.action, n.reward,
                  n.optimal_action)
                     IS DISTINCT FROM (o.is_profitable, o.symbol, o.state_package_id, o.next_state_package_id, o.done,
                                       o.action, o.reward, o.optimal_action)
                     AS inputs_changed
          FROM new_rows n JOIN old_rows o ON o.id = n.id
          WHERE (n.priority, n.is_profitable, n.symbol, n.state_package_id, n.next_state_package_id, n.done, n.action,
                 n.reward, n.optimal_action)
                IS DISTINCT FROM (o.priority, o.is_profitable, o.symbol, o.state_package_id, o.next_state_package_id,
                                  o.done, o.action, o.reward, o.optimal_action)
         ) AS n;
    IF reweigh IS NULL AND resync IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM rl_replay_config WHERE id = 1 FOR UPDATE;
    IF set_ids IS NOT NULL AND EXISTS (SELECT 1 FROM rl_replay_priority_log) THEN   -- logged under the lock
        INSERT INTO rl_replay_priority_log (experience_ids, priorities)
        SELECT array_agg(u.id), array_agg(u.priority)
        FROM unnest(set_ids, set_priorities) AS u(id, priority)
        WHERE u.id IN (SELECT p.experience_id FROM v_rl_replay_pending_priorities p)
        HAVING count(*) > 0;
    END IF;
    PERFORM rl_replay_raise_max(top);
    IF reweigh IS NOT NULL THEN
        PERFORM rl_replay_reweigh(reweigh);
    END IF;
    IF resync IS NOT NULL THEN
        PERFORM rl_replay_sync(resync);
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

-- AFTER TRUNCATE of experiences: the index and the logs are empty too.
CREATE OR REPLACE FUNCTION rl_replay_on_truncate()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM rl_replay_draws;
    DELETE FROM rl_replay_priority_log;
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
