-- similar_setups v0001: the k valid packages of the same symbol, strictly earlier than the given
-- one (no look-ahead), whose embeddings are nearest by cosine distance, with their validated
-- outcomes (mean profit and win rate over the predictions made from each).
-- Uses the HNSW index; iterative scans keep k results when the filters drop candidates.
CREATE OR REPLACE FUNCTION similar_setups(query_package_id bigint, k integer DEFAULT 10)
RETURNS TABLE (package_id bigint, symbol text, ts timestamptz, distance double precision,
               is_premium boolean, validated_outcomes bigint, mean_profit double precision,
               win_rate double precision)
LANGUAGE plpgsql STABLE
SET hnsw.iterative_scan = 'relaxed_order'
AS $$
DECLARE
    q input_packages%ROWTYPE;
BEGIN
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'k must be between 1 and 1000, got %', k USING ERRCODE = '22023';
    END IF;
    SELECT * INTO q FROM input_packages WHERE id = query_package_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'package % does not exist', query_package_id USING ERRCODE = 'P0002';
    END IF;
    IF q.embedding IS NULL THEN
        RAISE EXCEPTION 'package % has no embedding', query_package_id USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH neighbours AS MATERIALIZED (
        SELECT c.id, c.symbol, c.ts, c.is_premium, c.embedding <=> q.embedding AS distance
        FROM input_packages c
        WHERE c.is_valid AND c.symbol = q.symbol AND c.ts < q.ts AND c.embedding IS NOT NULL
        ORDER BY c.embedding <=> q.embedding
        LIMIT k
    )
    SELECT n.id, n.symbol, n.ts, n.distance, n.is_premium,
           count(o.prediction_id),
           avg(o.actual_profit),
           avg(o.is_profitable::int)::double precision
    FROM neighbours n
    LEFT JOIN predictions p ON p.package_id = n.id
    LEFT JOIN outcomes o ON o.prediction_id = p.id AND o.status = 'validated'
    GROUP BY n.id, n.symbol, n.ts, n.distance, n.is_premium
    ORDER BY n.distance, n.id;
END;
$$;
