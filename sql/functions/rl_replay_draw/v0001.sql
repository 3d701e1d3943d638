-- rl_replay_draw v0001: the sampler: one batch drawn in proportion to sample_weight
-- (rl_replay_draw), served with its probabilities and logged (rl_replay_sample). Design: rl_replay_slots v0001.
-- Split by concern from rl_replay_index v0003 (migration 0016), definitions unchanged: the index's
-- geometry and upkeep are in rl_replay_slots, the sampler in rl_replay_draw, the priority write-back and
-- the fold in rl_replay_write_back. A new version copies only the file of the concern that changes.

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
    got integer;
    accepted integer;
    width integer;
    drawn bigint;
    rejected integer;
    acceptance float8;
    has_profitable boolean;
    c_bucket integer[]; c_slot integer[]; c_threshold float8[];
BEGIN
    PERFORM setseed(p_seed);
    SELECT EXISTS (SELECT 1 FROM rl_replay_buckets b
                   WHERE b.n > 0 AND b.is_profitable AND (p_symbol IS NULL OR b.symbol = p_symbol))
    INTO has_profitable;
    -- Per stratum the buckets' cumulative masses n * top, for width_bucket.
    FOR t IN
        SELECT r.stratum, max(r.total) AS total, sum(r.weight_sum) AS mass, array_agg(r.lower ORDER BY r.id) AS lowers,
               array_agg(r.id ORDER BY r.id) AS ids, array_agg(r.n ORDER BY r.id) AS sizes,
               array_agg(r.top ORDER BY r.id) AS tops
        FROM (SELECT s.stratum, b.id, b.n, b.top, b.weight_sum,
                     sum(b.n * b.top) OVER (PARTITION BY s.stratum ORDER BY b.id) - b.n * b.top AS lower,
                     sum(b.n * b.top) OVER (PARTITION BY s.stratum) AS total
              FROM (SELECT b.id, b.is_profitable, b.n, b.weight_sum, rl_replay_bucket_top(b.bucket) AS top
                    FROM rl_replay_buckets b
                    WHERE b.n > 0 AND (p_symbol IS NULL OR b.symbol = p_symbol)) AS b
              JOIN (VALUES (0), (1)) AS s(stratum) ON s.stratum = 0 OR b.is_profitable) AS r
        GROUP BY r.stratum
        ORDER BY r.stratum
    LOOP
        need := CASE WHEN t.stratum = 1 THEN p_need_profitable
                     WHEN has_profitable THEN p_need_all
                     ELSE p_need_all + p_need_profitable END;
        got := 0;
        drawn := 0;
        rejected := 0;
        -- The share of probes accepted: the index's weight over its mass n * top (>= 1/16 by rl_replay_tolerates).
        acceptance := least(1, greatest(t.mass / nullif(t.total, 0), 1.0 / 16));
        WHILE got < need LOOP
            -- Candidates (bucket, slot, acceptance threshold), computed without touching the slots: twice the
            -- rows still needed at this acceptance, plus 64, makes one round enough nearly always; a round that
            -- falls short continues the same sequence of draws, so rows stay exact.
            width := ceil(2 * (need - got) / acceptance)::integer + 64;
            SELECT array_agg(t.ids[c.i] ORDER BY c.k),
                   array_agg(least(floor(c.u_slot * t.sizes[c.i]), t.sizes[c.i] - 1)::integer ORDER BY c.k),
                   array_agg(c.u_accept * t.tops[c.i] ORDER BY c.k)
            INTO c_bucket, c_slot, c_threshold
            FROM (SELECT g.k, width_bucket(random() * t.total, t.lowers) AS i, random() AS u_slot,
                         random() AS u_accept
                  FROM generate_series(1, width) AS g(k)) AS c;
            -- Probe them in draw order; the executor stops at the last accepted row needed.
            RETURN QUERY
            SELECT t.stratum, drawn + c.draw, s.experience_id, s.bucket_id, s.weight, s.priority, s.state_package_id,
                   s.next_state_package_id, s.action, s.reward, s.done, s.optimal_action
            FROM unnest(c_bucket, c_slot, c_threshold) WITH ORDINALITY AS c(bucket_id, slot, threshold, draw)
            JOIN rl_replay_slots s ON s.bucket_id = c.bucket_id AND s.slot = c.slot
            WHERE c.threshold < s.weight
            ORDER BY c.draw
            LIMIT need - got;
            GET DIAGNOSTICS accepted = ROW_COUNT;
            -- A consistent index accepts every candidate with probability >= 1/16: 1024 candidates in a row
            -- rejected (probability <= (15/16)^1024 ~ 2e-29) mean it is not, and the caller reports the shortfall.
            rejected := CASE WHEN accepted = 0 THEN rejected + width ELSE 0 END;
            EXIT WHEN rejected >= 1024;
            got := got + accepted;
            drawn := drawn + width;
        END LOOP;
    END LOOP;
END
$$;

-- One batch for the trainer in one statement: draw (rl_replay_draw), log the draws in rl_replay_draws and
-- return the rows with their probabilities, stratum 0 first, each in draw order, and the id of the log row
-- (rl_replay_fold moves the draws into experiences). Fewer rows than asked mean an
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
