-- similar_setups_summary v0001: one row aggregating similar_setups(query, k): how many neighbours,
-- how many validated outcomes they have, their win rate and mean profit (outcome-weighted).
CREATE OR REPLACE FUNCTION similar_setups_summary(query_package_id bigint, k integer DEFAULT 10)
RETURNS TABLE (neighbours bigint, validated_outcomes bigint, win_rate double precision,
               mean_profit double precision, mean_distance double precision)
LANGUAGE sql STABLE
AS $$
    SELECT count(*),
           sum(s.validated_outcomes)::bigint,
           sum(s.win_rate * s.validated_outcomes) / nullif(sum(s.validated_outcomes), 0),
           sum(s.mean_profit * s.validated_outcomes) / nullif(sum(s.validated_outcomes), 0),
           avg(s.distance)
    FROM similar_setups(query_package_id, k) s;
$$;
