-- rl_replay_index v0001: the sampling index behind profit-weighted prioritized replay, the sampler and
-- the priority write-back.
--
-- Design (exact; O(batch) per sample, O(changed rows) per update, independent of the table size):
--   * rl_replay_buckets: one row per (symbol, class, bucket) with a small integer id, its row count n
--     and weight sum. Bucket k holds weights 2^(k/4) <= w < 2^((k+1)/4) (quarter octaves);
--     rl_replay_bucket_top(k) = 2^((k+1)/4) is the bound every function uses;
--   * rl_replay_slots: every replayable experience (a row of v_rl_replay) with its bucket id, its
--     sample_weight w, a slot that is dense inside the bucket, 0 .. n-1, and a copy of the fields the
--     trainer needs (priority, packages, action, reward, done, optimal action), so that one probe of the
--     (bucket_id, slot) index both picks a uniform row of a bucket and fetches it;
--   * rl_replay_draws: draws not yet counted in experiences.times_sampled / last_sampled_at, one row per
--     batch. The write-back of a batch's TD errors folds its draws into experiences in the same UPDATE
--     that writes the priorities (one row version per experience and step, not two); v_rl_replay and
--     v_rl_replay_stats add the draws still pending, so SQL readers always see exact counts.
-- A draw picks a bucket with probability proportional to n * top (known exactly from the bucket rows),
-- a uniform slot in it, and accepts the row with probability w / top (> 2^(-1/4) ~ 0.84, because
-- w >= the previous bucket's top). Accepted rows are distributed exactly as w / sum(w): bucketed rejection
-- sampling. rl_replay_draw() probes candidates lazily in draw order and stops at the last accepted row it
-- needs: a batch costs about batch / 0.9 index probes and no other table.
--
-- Triggers (migration 0006) keep the index equal to v_rl_replay whatever client writes:
--   * insert: rl_replay_add() appends the new rows to their buckets;
--   * update: bookkeeping-only updates (times_sampled, last_sampled_at, ...) return at once; a
--     priority-only change (the write-back path) takes the new weight from v_rl_replay_weights without
--     re-reading packages (replayability cannot change with the priority); any other change of a
--     replay input or of a copied field goes through v_rl_replay (rl_replay_sync);
--   * delete, package validity flips: rl_replay_sync(); config change (alpha, boost): rl_replay_rebuild().
-- rl_replay_apply() does the re-slotting for all of them, set-based.
-- Writers serialise on the rl_replay_config row; samplers read one consistent snapshot and never wait.
-- The copied fields are listed, in this order, wherever the index is written: rl_replay_apply,
-- rl_replay_sync, rl_replay_add, rl_replay_rebuild (and checked by the replay.index_mismatches query).

-- The upper bound of bucket k: every weight w in bucket k has rl_replay_bucket_top(k - 1) <= w < rl_replay_bucket_top(k).
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

-- Draw need_all experiences from all replayable ones (stratum 0) and need_profitable from the profitable
-- ones (stratum 1), of one symbol or all when NULL, each in proportion to sample_weight, with replacement;
-- rows in draw order, with the index's copy of their fields. The random numbers come from setseed(seed), so
-- a seed and a database state give one batch. With nothing profitable in scope every draw comes from all;
-- with nothing replayable, no row. STABLE on purpose: every statement in it sees the caller's snapshot, so
-- the bucket sizes read first and the slots probed afterwards agree even while writers commit.
CREATE OR REPLACE FUNCTION rl_replay_draw(p_symbol text, p_need_all integer, p_need_profitable integer,
                                          p_seed double precision)
RETURNS TABLE (stratum integer, draw bigint, experience_id bigint, bucket_id integer, weight double precision,
               priority double precision, state_package_id bigint, next_state_package_id bigint, action text,
               reward double precision, done boolean, optimal_action text)
LANGUAGE plpgsql STABLE
-- Every slot is found by key; never let a guessed row count tempt the planner into scanning the index.
SET enable_seqscan = off
AS $$
DECLARE
    t record;
    need integer;
    has_profitable boolean;
    c_bucket integer[]; c_slot integer[]; c_threshold float8[];
BEGIN
    PERFORM setseed(p_seed);
    SELECT EXISTS (SELECT 1 FROM rl_replay_buckets b
                   WHERE b.n > 0 AND b.is_profitable AND (p_symbol IS NULL OR b.symbol = p_symbol))
    INTO has_profitable;
    -- Per stratum the buckets' cumulative masses n * top, for width_bucket.
    FOR t IN
        SELECT r.stratum, max(r.total) AS total, array_agg(r.lower ORDER BY r.id) AS lowers,
               array_agg(r.id ORDER BY r.id) AS ids, array_agg(r.n ORDER BY r.id) AS sizes,
               array_agg(r.top ORDER BY r.id) AS tops
        FROM (SELECT s.stratum, b.id, b.n, b.top,
                     sum(b.n * b.top) OVER (PARTITION BY s.stratum ORDER BY b.id) - b.n * b.top AS lower,
                     sum(b.n * b.top) OVER (PARTITION BY s.stratum) AS total
              FROM (SELECT b.id, b.is_profitable, b.n, rl_replay_bucket_top(b.bucket) AS top
                    FROM rl_replay_buckets b
                    WHERE b.n > 0 AND (p_symbol IS NULL OR b.symbol = p_symbol)) AS b
              JOIN (VALUES (0), (1)) AS s(stratum) ON s.stratum = 0 OR b.is_profitable) AS r
        GROUP BY r.stratum
        ORDER BY r.stratum
    LOOP
        need := CASE WHEN t.stratum = 1 THEN p_need_profitable
                     WHEN has_profitable THEN p_need_all
                     ELSE p_need_all + p_need_profitable END;
        -- Candidates (bucket, slot, acceptance threshold), computed without touching the slots. 2 * need + 64
        -- of them leave a shortfall probability below 1e-30 at the guaranteed acceptance rate.
        SELECT array_agg(t.ids[c.i] ORDER BY c.k),
               array_agg(least(floor(c.u_slot * t.sizes[c.i]), t.sizes[c.i] - 1)::integer ORDER BY c.k),
               array_agg(c.u_accept * t.tops[c.i] ORDER BY c.k)
        INTO c_bucket, c_slot, c_threshold
        FROM (SELECT g.k, width_bucket(random() * t.total, t.lowers) AS i, random() AS u_slot, random() AS u_accept
              FROM generate_series(1, 2 * need + 64) AS g(k)) AS c;
        -- Probe them in draw order; the executor stops at the last accepted row needed.
        RETURN QUERY
        SELECT t.stratum, c.draw, s.experience_id, s.bucket_id, s.weight, s.priority, s.state_package_id,
               s.next_state_package_id, s.action, s.reward, s.done, s.optimal_action
        FROM unnest(c_bucket, c_slot, c_threshold) WITH ORDINALITY AS c(bucket_id, slot, threshold, draw)
        JOIN rl_replay_slots s ON s.bucket_id = c.bucket_id AND s.slot = c.slot
        WHERE c.threshold < s.weight
        ORDER BY c.draw
        LIMIT need;
    END LOOP;
END
$$;

-- One batch for the trainer in one statement: draw (rl_replay_draw), log the draws in rl_replay_draws and
-- return the rows with their probabilities, stratum 0 first, each in draw order, and the id of the log row
-- (pass it to rl_replay_write_back to fold the draws into experiences). Fewer rows than asked mean an
-- inconsistent index. synchronous_commit false: the draw log's commit does not wait for the WAL flush.
CREATE OR REPLACE FUNCTION rl_replay_sample(p_symbol text, p_need_all integer, p_need_profitable integer,
                                            p_seed double precision, p_synchronous_commit boolean DEFAULT true)
RETURNS TABLE (draw_row bigint, stratum integer, id bigint, symbol text, state_package_id bigint,
               next_state_package_id bigint, action text, reward double precision, done boolean,
               optimal_action text, is_profitable boolean, priority double precision,
               sample_weight double precision, sampling_probability double precision,
               profitable_probability double precision, replay_size bigint)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    IF NOT p_synchronous_commit THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    RETURN QUERY
    WITH drawn AS MATERIALIZED (
        SELECT * FROM rl_replay_draw(p_symbol, p_need_all, p_need_profitable, p_seed)
    ), logged AS (
        INSERT INTO rl_replay_draws (experience_ids)
        SELECT array_agg(d.experience_id ORDER BY d.stratum, d.draw) FROM drawn d HAVING count(*) > 0
        RETURNING rl_replay_draws.id
    )
    -- Probabilities as v_rl_replay defines them: the row's weight over the scope's total (v_rl_replay_totals),
    -- with the weight as the index holds it in this snapshot (the view's sample_weight, copied by trigger).
    SELECT (SELECT l.id FROM logged l), d.stratum, d.experience_id, b.symbol, d.state_package_id,
           d.next_state_package_id, d.action, d.reward, d.done, d.optimal_action, b.is_profitable, d.priority,
           d.weight,
           d.weight / nullif(t.weight_all, 0),
           CASE WHEN b.is_profitable THEN d.weight / nullif(t.weight_profitable, 0) END,
           t.replay_size
    FROM drawn d
    JOIN rl_replay_buckets b ON b.id = d.bucket_id
    CROSS JOIN (SELECT * FROM v_rl_replay_totals WHERE symbol IS NOT DISTINCT FROM p_symbol) AS t
    ORDER BY d.stratum, d.draw;
END
$$;

-- Write back new priorities (ids distinct) and fold the draws logged in the given rl_replay_draws rows into
-- experiences.times_sampled / last_sampled_at, in one UPDATE; the update trigger re-indexes the new
-- priorities. Returns how many of the ids exist (and got their priority). synchronous_commit false: the
-- commit does not wait for the WAL flush (a database crash may undo the last writes, never half of one).
CREATE OR REPLACE FUNCTION rl_replay_write_back(p_ids bigint[], p_priorities double precision[],
                                                p_draw_rows bigint[] DEFAULT NULL,
                                                p_synchronous_commit boolean DEFAULT true)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    written integer;
BEGIN
    IF NOT p_synchronous_commit THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    WITH folded AS (
        DELETE FROM rl_replay_draws d WHERE d.id = ANY (p_draw_rows) RETURNING d.drawn_at, d.experience_ids
    ), draws AS (
        SELECT u.id, count(*)::integer AS n, max(f.drawn_at) AS drawn_at
        FROM folded f CROSS JOIN unnest(f.experience_ids) AS u(id)
        GROUP BY u.id
    ), changes AS (
        SELECT coalesce(p.id, d.id) AS id, p.priority, d.n, d.drawn_at
        FROM unnest(p_ids, p_priorities) AS p(id, priority)
        FULL JOIN draws d ON d.id = p.id
    ), updated AS (
        UPDATE experiences e
        SET priority = coalesce(c.priority, e.priority),
            times_sampled = e.times_sampled + coalesce(c.n, 0),
            last_sampled_at = greatest(e.last_sampled_at, c.drawn_at)
        FROM changes c
        WHERE e.id = c.id
        RETURNING c.priority IS NOT NULL AS prioritised
    )
    SELECT count(*) FILTER (WHERE prioritised) INTO written FROM updated;
    RETURN written;
END
$$;

-- Fold every pending draw into experiences (maintenance: draws of batches never written back).
CREATE OR REPLACE FUNCTION rl_replay_fold_draws()
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    pending bigint[] := ARRAY(SELECT id FROM rl_replay_draws ORDER BY id);
BEGIN
    PERFORM rl_replay_write_back('{}', '{}', pending);
    RETURN cardinality(pending);
END
$$;

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

-- Bring the index rows of the given experiences to the wanted state, set-based. Each id (distinct) comes with
-- the bucket id, weight and priority it should be indexed at (a NULL bucket when it is not replayable) and
-- the bucket id, slot, weight and priority its index row has now (NULL when it has none): the callers read
-- both in one pass. New index rows copy their other fields from experiences; indexed rows keep theirs.
-- Per touched bucket, rows leaving it (moved, or no longer replayable) leave holes; the rows beyond the
-- bucket's new end, then the arriving rows, fill the holes in slot order, and the rest append, so slots stay
-- dense and distinct, 0 .. n-1 (rows pass through shared slots only inside the write statement).
CREATE OR REPLACE FUNCTION rl_replay_apply(p_ids bigint[], p_buckets integer[], p_weights double precision[],
                                           p_priorities double precision[], p_old_buckets integer[],
                                           p_old_slots integer[], p_old_weights double precision[],
                                           p_old_priorities double precision[])
RETURNS void
LANGUAGE plpgsql
-- Every row touched is found by key, with plain index scans (they also mark the dead index entries that
-- slot moves leave behind, which a bitmap scan would keep visiting). The CTE estimates are guesses and must
-- never tempt the planner into scanning the million-row index.
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_mergejoin = off
AS $$
DECLARE
    del_ids bigint[];
    mv_ids bigint[]; mv_buckets integer[]; mv_slots integer[]; mv_weights float8[]; mv_priorities float8[];
    new_ids bigint[]; new_buckets integer[]; new_slots integer[]; new_weights float8[]; new_priorities float8[];
    b_ids integer[]; b_sizes bigint[]; b_deltas float8[];
BEGIN
    -- Plan first (no writes), as arrays: their sizes are then known to the planner of the writes below.
    WITH change AS MATERIALIZED (
        SELECT * FROM unnest(p_ids, p_buckets, p_weights, p_priorities, p_old_buckets, p_old_slots, p_old_weights,
                             p_old_priorities)
            AS c(id, new_bucket, new_weight, new_priority, old_bucket, old_slot, old_weight, old_priority)
    ), leaving AS MATERIALIZED (
        SELECT id, old_bucket AS bucket_id, old_slot AS slot, old_weight AS weight FROM change
        WHERE old_bucket IS NOT NULL AND new_bucket IS DISTINCT FROM old_bucket
    ), arriving AS MATERIALIZED (
        SELECT id, new_bucket AS bucket_id, new_weight AS weight, new_priority AS priority, old_bucket IS NULL AS is_new
        FROM change
        WHERE new_bucket IS NOT NULL AND new_bucket IS DISTINCT FROM old_bucket
    ), sized AS MATERIALIZED (
        SELECT d.bucket_id, b.n AS n_old, b.n + d.dn AS n_new, d.dw
        FROM (SELECT x.bucket_id, sum(x.dn) AS dn, sum(x.dw) AS dw
              FROM (SELECT bucket_id, -1 AS dn, -weight AS dw FROM leaving
                    UNION ALL SELECT bucket_id, 1, weight FROM arriving
                    UNION ALL SELECT new_bucket, 0, new_weight - old_weight FROM change
                              WHERE new_bucket = old_bucket AND new_weight <> old_weight) AS x
              GROUP BY x.bucket_id) AS d
        JOIN rl_replay_buckets b ON b.id = d.bucket_id
    ), holes AS MATERIALIZED (
        -- Slots freed below the new end, in order; a bucket that grows also gets n_old, n_old + 1, ...
        SELECT l.bucket_id, l.slot, row_number() OVER (PARTITION BY l.bucket_id ORDER BY l.slot) AS rn
        FROM leaving l JOIN sized z ON z.bucket_id = l.bucket_id
        WHERE l.slot < z.n_new
    ), hole_counts AS (
        SELECT bucket_id, count(*) AS freed FROM holes GROUP BY bucket_id
    ), fillers AS (
        -- The rows beyond a shrinking bucket's new end (those not leaving), then the arriving rows.
        SELECT f.id, f.bucket_id, f.weight, f.priority, f.is_new,
               row_number() OVER (PARTITION BY f.bucket_id ORDER BY f.ord, f.slot, f.id) AS rn
        FROM (SELECT t.experience_id AS id, z.bucket_id, coalesce(c.new_weight, t.weight) AS weight,
                     coalesce(c.new_priority, t.priority) AS priority, false AS is_new, 0 AS ord, t.slot
              FROM sized z
              CROSS JOIN LATERAL (
                  SELECT s.experience_id, s.slot, s.weight, s.priority FROM rl_replay_slots s
                  WHERE s.bucket_id = z.bucket_id AND s.slot >= z.n_new AND s.slot < z.n_old
                  OFFSET 0  -- keep it a per-bucket index range scan
              ) AS t
              LEFT JOIN change c ON c.id = t.experience_id
              WHERE c.id IS NULL OR c.new_bucket = c.old_bucket
              UNION ALL
              SELECT id, bucket_id, weight, priority, is_new, 1, 0 FROM arriving) AS f
    ), placed AS MATERIALIZED (
        SELECT f.id, f.bucket_id, f.weight, f.priority, f.is_new,
               coalesce(h.slot, (z.n_old + f.rn - coalesce(k.freed, 0) - 1)::integer) AS slot
        FROM fillers f
        JOIN sized z ON z.bucket_id = f.bucket_id
        LEFT JOIN holes h ON h.bucket_id = f.bucket_id AND h.rn = f.rn
        LEFT JOIN hole_counts k ON k.bucket_id = f.bucket_id
    )
    SELECT d.ids, m.ids, m.buckets, m.slots, m.weights, m.priorities, n.ids, n.buckets, n.slots, n.weights,
           n.priorities, b.ids, b.sizes, b.deltas
    INTO del_ids, mv_ids, mv_buckets, mv_slots, mv_weights, mv_priorities, new_ids, new_buckets, new_slots,
         new_weights, new_priorities, b_ids, b_sizes, b_deltas
    FROM (SELECT array_agg(l.id) AS ids FROM leaving l
          WHERE NOT EXISTS (SELECT 1 FROM arriving a WHERE a.id = l.id)) AS d,
         -- Placed rows take their new bucket and slot; rows staying where they are only change weight / priority.
         (SELECT array_agg(x.id) AS ids, array_agg(x.bucket_id) AS buckets, array_agg(x.slot) AS slots,
                 array_agg(x.weight) AS weights, array_agg(x.priority) AS priorities
          FROM (SELECT id, bucket_id, slot, weight, priority FROM placed WHERE NOT is_new
                UNION ALL
                SELECT c.id, c.old_bucket, c.old_slot, c.new_weight, c.new_priority FROM change c
                WHERE c.new_bucket = c.old_bucket
                  AND (c.new_weight <> c.old_weight OR c.new_priority <> c.old_priority)
                  AND NOT EXISTS (SELECT 1 FROM placed p WHERE p.id = c.id)) AS x) AS m,
         (SELECT array_agg(id) AS ids, array_agg(bucket_id) AS buckets, array_agg(slot) AS slots,
                 array_agg(weight) AS weights, array_agg(priority) AS priorities
          FROM placed WHERE is_new) AS n,
         (SELECT array_agg(bucket_id) AS ids, array_agg(n_new) AS sizes, array_agg(dw) AS deltas FROM sized) AS b;

    -- Then write, all in one statement.
    WITH removed AS (
        DELETE FROM rl_replay_slots WHERE experience_id = ANY (del_ids)
    ), moved AS (
        UPDATE rl_replay_slots s SET bucket_id = m.bucket_id, slot = m.slot, weight = m.weight, priority = m.priority
        FROM unnest(mv_ids, mv_buckets, mv_slots, mv_weights, mv_priorities) AS m(id, bucket_id, slot, weight, priority)
        WHERE s.experience_id = m.id
    ), added AS (
        INSERT INTO rl_replay_slots (experience_id, bucket_id, slot, weight, priority, state_package_id,
                                     next_state_package_id, action, reward, done, optimal_action)
        SELECT n.id, n.bucket_id, n.slot, n.weight, n.priority, e.state_package_id, e.next_state_package_id,
               e.action, e.reward, e.done, e.optimal_action
        FROM unnest(new_ids, new_buckets, new_slots, new_weights, new_priorities) AS n(id, bucket_id, slot, weight, priority)
        JOIN experiences e ON e.id = n.id
    )
    UPDATE rl_replay_buckets b
    SET n = z.n, weight_sum = CASE WHEN z.n = 0 THEN 0 ELSE b.weight_sum + z.dw END
    FROM unnest(b_ids, b_sizes, b_deltas) AS z(id, n, dw)
    WHERE b.id = z.id;
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
    ids bigint[]; buckets integer[]; weights float8[]; priorities float8[];
    old_buckets integer[]; old_slots integer[]; old_weights float8[]; old_priorities float8[];
    missing boolean; symbols text[]; classes boolean[]; wanted integer[];
BEGIN
    IF changed IS NULL OR cardinality(changed) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM rl_replay_config WHERE id = 1 FOR UPDATE;
    FOR attempt IN 1 .. 2 LOOP  -- once more after creating buckets that did not exist yet
        SELECT array_agg(u.id), array_agg(nb.id), array_agg(v.sample_weight), array_agg(v.priority),
               array_agg(s.bucket_id), array_agg(s.slot), array_agg(s.weight), array_agg(s.priority),
               bool_or(v.id IS NOT NULL AND nb.id IS NULL), array_agg(v.symbol), array_agg(v.is_profitable),
               array_agg(rl_replay_bucket(v.sample_weight))
        INTO ids, buckets, weights, priorities, old_buckets, old_slots, old_weights, old_priorities,
             missing, symbols, classes, wanted
        FROM (SELECT DISTINCT c.id FROM unnest(changed) AS c(id)) AS u
        LEFT JOIN v_rl_replay v ON v.id = u.id
        LEFT JOIN rl_replay_buckets nb
               ON nb.symbol = v.symbol AND nb.is_profitable = v.is_profitable AND nb.bucket = rl_replay_bucket(v.sample_weight)
        LEFT JOIN rl_replay_slots s ON s.experience_id = u.id;
        EXIT WHEN NOT coalesce(missing, false);
        IF attempt = 2 THEN
            RAISE EXCEPTION 'rl_replay_sync: bucket rows still missing after creating them';
        END IF;
        PERFORM rl_replay_ensure_buckets(symbols, classes, wanted);
    END LOOP;
    PERFORM rl_replay_apply(ids, buckets, weights, priorities, old_buckets, old_slots, old_weights, old_priorities);
    UPDATE rl_replay_slots s
    SET state_package_id = e.state_package_id, next_state_package_id = e.next_state_package_id,
        action = e.action, reward = e.reward, done = e.done, optimal_action = e.optimal_action
    FROM experiences e
    WHERE s.experience_id = ANY (ids) AND e.id = s.experience_id
      AND (s.state_package_id, s.next_state_package_id, s.action, s.reward, s.done, s.optimal_action)
          IS DISTINCT FROM (e.state_package_id, e.next_state_package_id, e.action, e.reward, e.done, e.optimal_action);
END
$$;

-- Re-index experiences whose priority alone changed (the write-back path). Only indexed rows matter: a row's
-- replayability does not depend on its priority. The new weight comes from v_rl_replay_weights, which needs
-- no package, and the symbol and class from the row's current bucket.
CREATE OR REPLACE FUNCTION rl_replay_reweigh(changed bigint[])
RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_mergejoin = off
AS $$
DECLARE
    ids bigint[]; buckets integer[]; weights float8[]; priorities float8[];
    old_buckets integer[]; old_slots integer[]; old_weights float8[]; old_priorities float8[];
    missing boolean; symbols text[]; classes boolean[]; wanted integer[];
BEGIN
    FOR attempt IN 1 .. 2 LOOP  -- once more after creating buckets that did not exist yet
        SELECT array_agg(s.experience_id), array_agg(nb.id), array_agg(w.sample_weight), array_agg(w.priority),
               array_agg(s.bucket_id), array_agg(s.slot), array_agg(s.weight), array_agg(s.priority),
               bool_or(nb.id IS NULL), array_agg(ob.symbol), array_agg(ob.is_profitable),
               array_agg(rl_replay_bucket(w.sample_weight))
        INTO ids, buckets, weights, priorities, old_buckets, old_slots, old_weights, old_priorities,
             missing, symbols, classes, wanted
        FROM unnest(changed) AS c(id)
        JOIN rl_replay_slots s ON s.experience_id = c.id
        JOIN rl_replay_buckets ob ON ob.id = s.bucket_id
        JOIN v_rl_replay_weights w ON w.id = c.id
        LEFT JOIN rl_replay_buckets nb
               ON nb.symbol = ob.symbol AND nb.is_profitable = ob.is_profitable AND nb.bucket = rl_replay_bucket(w.sample_weight);
        EXIT WHEN NOT coalesce(missing, false);
        IF attempt = 2 THEN
            RAISE EXCEPTION 'rl_replay_reweigh: bucket rows still missing after creating them';
        END IF;
        PERFORM rl_replay_ensure_buckets(symbols, classes, wanted);
    END LOOP;
    IF ids IS NOT NULL THEN
        PERFORM rl_replay_apply(ids, buckets, weights, priorities, old_buckets, old_slots, old_weights, old_priorities);
    END IF;
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

-- AFTER UPDATE (statement): re-index the experiences whose replay inputs or copied fields changed. Updates
-- that only touch bookkeeping (times_sampled, last_sampled_at) find nothing to do and return.
CREATE OR REPLACE FUNCTION rl_replay_on_update()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    reweigh bigint[];
    resync bigint[];
    top float8;
BEGIN
    SELECT array_agg(n.id) FILTER (WHERE NOT n.inputs_changed), array_agg(n.id) FILTER (WHERE n.inputs_changed),
           max(n.priority)
    INTO reweigh, resync, top
    FROM (SELECT n.id, n.priority,
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

-- AFTER TRUNCATE of experiences: the index and the draw log are empty too.
CREATE OR REPLACE FUNCTION rl_replay_on_truncate()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM rl_replay_draws;
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
