-- rl_replay_write_back v0001: the priority write-back (logged, index rows re-weighed in
-- place) and the fold of the logs into experiences. Design: rl_replay_slots v0001.
-- Split by concern from rl_replay_index v0003 (migration 0016), definitions unchanged: the index's
-- geometry and upkeep are in rl_replay_slots, the sampler in rl_replay_draw, the priority write-back and
-- the fold in rl_replay_write_back. A new version copies only the file of the concern that changes.

-- Write back new priorities: log them (rl_replay_priority_log; v_rl_replay_weights shows them at once,
-- rl_replay_fold() writes them into experiences later) and re-weigh the experiences' index rows. A row whose
-- new weight its bucket tolerates (rl_replay_tolerates) stays and only changes weight and priority, a HOT
-- update of a page the sample that drew it has just read; the others move (rl_replay_apply). Given twice, an
-- id keeps its last priority; a NULL id or a priority that is not finite and > 0 is an error. Returns how
-- many of the ids are replayable (in the index); the priorities of the others are logged all the same, for
-- the fold. synchronous_commit false: the commit does not wait for the WAL flush (a database crash may undo
-- the last write-backs, never half of one).
CREATE OR REPLACE FUNCTION rl_replay_write_back(p_ids bigint[], p_priorities double precision[],
                                                p_synchronous_commit boolean DEFAULT true)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    indexed integer;
    ids bigint[]; priorities float8[];
    m_ids bigint[]; m_symbols text[]; m_classes boolean[]; m_weights float8[]; m_priorities float8[];
BEGIN
    IF cardinality(p_ids) IS DISTINCT FROM cardinality(p_priorities) THEN
        RAISE EXCEPTION 'rl_replay_write_back: % ids but % priorities', cardinality(p_ids), cardinality(p_priorities)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    -- What experiences' CHECK would refuse must not reach the log, where only the fold would meet it.
    IF EXISTS (SELECT 1 FROM unnest(p_ids, p_priorities) AS u(id, priority)
               WHERE u.id IS NULL OR u.priority IS NULL OR NOT (u.priority > 0 AND u.priority < 'Infinity')) THEN
        RAISE EXCEPTION 'rl_replay_write_back: ids must not be NULL and priorities must be finite and > 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- An id given twice keeps its last priority, in the log as in the index.
    SELECT array_agg(g.id ORDER BY g.id), array_agg(g.priority ORDER BY g.id)
    INTO ids, priorities
    FROM (SELECT DISTINCT ON (u.id) u.id, u.priority
          FROM unnest(p_ids, p_priorities) WITH ORDINALITY AS u(id, priority, k)
          ORDER BY u.id, u.k DESC) AS g;
    IF NOT p_synchronous_commit THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    PERFORM 1 FROM rl_replay_config WHERE id = 1 FOR UPDATE;
    -- Logged under the lock: the log's order is the order in which write-backs reach the index, so the latest
    -- entry of an experience (what the views show) is the priority its index row holds.
    INSERT INTO rl_replay_priority_log (experience_ids, priorities) VALUES (ids, priorities);
    PERFORM rl_replay_raise_max((SELECT max(p) FROM unnest(priorities) AS p));
    WITH given AS (
        SELECT u.id, u.priority FROM unnest(ids, priorities) AS u(id, priority)
    ), cur AS MATERIALIZED (
        SELECT g.id, g.priority, s.ctid AS row, s.bucket_id, s.weight AS old_weight, b.bucket, b.symbol,
               b.is_profitable, rl_replay_weight(g.priority, b.is_profitable, c.alpha, c.profit_boost) AS weight
        FROM given g
        JOIN rl_replay_slots s ON s.experience_id = g.id
        JOIN rl_replay_buckets b ON b.id = s.bucket_id
        CROSS JOIN rl_replay_config c
        WHERE c.id = 1
    ), kept AS (
        UPDATE rl_replay_slots s
        SET weight = c.weight, priority = c.priority
        FROM cur c
        WHERE s.ctid = c.row AND rl_replay_tolerates(c.weight, c.bucket)
        RETURNING c.bucket_id, c.weight - c.old_weight AS dw
    ), summed AS (
        UPDATE rl_replay_buckets b
        SET weight_sum = b.weight_sum + d.dw
        FROM (SELECT k.bucket_id, sum(k.dw) AS dw FROM kept k GROUP BY k.bucket_id) AS d
        WHERE b.id = d.bucket_id
    )
    SELECT count(*), array_agg(c.id) FILTER (WHERE NOT c.stays), array_agg(c.symbol) FILTER (WHERE NOT c.stays),
           array_agg(c.is_profitable) FILTER (WHERE NOT c.stays), array_agg(c.weight) FILTER (WHERE NOT c.stays),
           array_agg(c.priority) FILTER (WHERE NOT c.stays)
    INTO indexed, m_ids, m_symbols, m_classes, m_weights, m_priorities
    FROM (SELECT cur.*, rl_replay_tolerates(cur.weight, cur.bucket) AS stays FROM cur) AS c;
    IF m_ids IS NOT NULL THEN
        PERFORM rl_replay_apply(m_ids, m_symbols, m_classes, m_weights, m_priorities, true);
    END IF;
    RETURN indexed;
END
$$;

-- Fold the oldest p_batches write-backs and sampled batches (all when NULL) into experiences: priorities
-- (the latest entry of each experience), times_sampled and last_sampled_at, in one UPDATE, marked
-- (trainsrv.rl_replay_fold = this statement's start time) so that the update trigger skips it; the folded log
-- rows go in the same statement, so the views' sums (experiences plus what is pending) never change. Then,
-- when the sampler's acceptance (rl_replay_acceptance) is below p_compact_below (NULL: 0.75),
-- the index rows of the folded priorities that the write-backs left below rl_replay_fits move to their natural
-- buckets (acceptance back above 1/4 for each): moves cost about as much as the rest of the fold, and the
-- sampler's time hardly changes above acceptance 0.6, so they are made only when the sampler would pay for
-- them. Returns the log rows folded (write-backs + batches).
-- Maintenance: the buffer runs it in the background, `trainsrv replay fold` by hand; nothing is exact only
-- after it.
CREATE OR REPLACE FUNCTION rl_replay_fold(p_batches integer DEFAULT NULL,
                                          p_compact_below double precision DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    folded integer;
    ids bigint[]; priorities float8[]; draws integer[]; drawn_at timestamptz[]; written bigint[];
    c_ids bigint[]; c_symbols text[]; c_classes boolean[]; c_weights float8[]; c_priorities float8[];
BEGIN
    IF p_batches < 1 THEN
        RAISE EXCEPTION 'rl_replay_fold: p_batches must be >= 1 or NULL, got %', p_batches
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH logged AS (
        DELETE FROM rl_replay_priority_log l
        WHERE l.id IN (SELECT id FROM rl_replay_priority_log ORDER BY id LIMIT p_batches)
        RETURNING l.id, l.experience_ids, l.priorities
    ), batches AS (
        DELETE FROM rl_replay_draws d
        WHERE d.id IN (SELECT id FROM rl_replay_draws ORDER BY id LIMIT p_batches)
        RETURNING d.drawn_at, d.experience_ids
    ), latest AS (
        SELECT DISTINCT ON (u.id) u.id, u.priority
        FROM logged l CROSS JOIN unnest(l.experience_ids, l.priorities) AS u(id, priority)
        ORDER BY u.id, l.id DESC
    ), counted AS (
        SELECT u.id, count(*)::integer AS n, max(b.drawn_at) AS drawn_at
        FROM batches b CROSS JOIN unnest(b.experience_ids) AS u(id)
        GROUP BY u.id
    )
    SELECT (SELECT count(*) FROM logged) + (SELECT count(*) FROM batches),
           array_agg(coalesce(p.id, d.id) ORDER BY coalesce(p.id, d.id)),
           array_agg(p.priority ORDER BY coalesce(p.id, d.id)), array_agg(d.n ORDER BY coalesce(p.id, d.id)),
           array_agg(d.drawn_at ORDER BY coalesce(p.id, d.id)), array_agg(p.id) FILTER (WHERE p.id IS NOT NULL)
    INTO folded, ids, priorities, draws, drawn_at, written
    FROM latest p
    FULL JOIN counted d ON d.id = p.id;
    IF ids IS NULL THEN
        RETURN folded;
    END IF;
    -- The ids are in order and the join is a nested loop over them (no sequential scan), so rows are locked in
    -- id order, as a multi-row UPDATE by an id list locks them: no deadlock with such a client.
    PERFORM set_config('trainsrv.rl_replay_fold', statement_timestamp()::text, true);
    UPDATE experiences e
    SET priority = coalesce(c.priority, e.priority),
        times_sampled = e.times_sampled + coalesce(c.n, 0),
        last_sampled_at = greatest(e.last_sampled_at, c.drawn_at)
    FROM unnest(ids, priorities, draws, drawn_at) AS c(id, priority, n, drawn_at)
    WHERE e.id = c.id;
    PERFORM set_config('trainsrv.rl_replay_fold', '', true);
    -- Rows the write-backs left more than two octaves below their bucket's top go to their natural bucket.
    IF written IS NULL OR rl_replay_acceptance() >= coalesce(p_compact_below, 0.75) THEN
        RETURN folded;
    END IF;
    PERFORM 1 FROM rl_replay_config WHERE id = 1 FOR UPDATE;  -- after the rows' locks, as in the trigger path
    SELECT array_agg(s.experience_id), array_agg(b.symbol), array_agg(b.is_profitable), array_agg(s.weight),
           array_agg(s.priority)
    INTO c_ids, c_symbols, c_classes, c_weights, c_priorities
    FROM rl_replay_slots s
    JOIN rl_replay_buckets b ON b.id = s.bucket_id
    WHERE s.experience_id = ANY (written) AND NOT rl_replay_fits(s.weight, b.bucket);
    IF c_ids IS NOT NULL THEN
        PERFORM rl_replay_apply(c_ids, c_symbols, c_classes, c_weights, c_priorities, true);
    END IF;
    RETURN folded;
END
$$;
