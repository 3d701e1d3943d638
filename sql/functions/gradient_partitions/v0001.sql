-- gradient_partitions v0001 (migration 0013): gradient_blobs is partitioned by LIST (session_id), one
-- partition per session, named gradient_blobs_s<id>. Dropping a session's gradients is then a DETACH and a
-- DROP TABLE (metadata, no row-by-row delete, no bloat left for VACUUM).
--
-- * gradient_blobs_partition(session_id): the partition's name (text; the table may not exist);
-- * gradient_blobs_create_partition(session_id): creates it unless it exists. The table is created standalone
--   and then ATTACHed, which locks gradient_blobs with SHARE UPDATE EXCLUSIVE only: writers' COPYs and
--   replays' reads of other sessions go on (CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE);
-- * gradient_blobs_drop_partition(session_id): detaches and drops it; returns the bytes freed (0 if none);
-- * gradient_blobs_session_bytes(session_id): the partition's size on disk (0 if none);
-- * the AFTER INSERT trigger on training_sessions creates the new session's partition, whatever client
--   inserts the row: a step's COPY can never find its session without a partition.
-- The functions are SECURITY DEFINER (the schema owner's DDL rights), so the trainer role needs none.

CREATE OR REPLACE FUNCTION gradient_blobs_partition(p_session_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'gradient_blobs_s' || p_session_id::text
$$;

CREATE OR REPLACE FUNCTION gradient_blobs_create_partition(p_session_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := gradient_blobs_partition(p_session_id);
    space name;
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN;
    END IF;
    -- In gradient_blobs' own tablespace, if it has one (ALTER TABLE gradient_blobs SET TABLESPACE puts new
    -- sessions' gradients on another disk).
    SELECT t.spcname INTO space
    FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace
    WHERE c.oid = 'gradient_blobs'::regclass;
    EXECUTE format('CREATE TABLE %I (LIKE gradient_blobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                   'INCLUDING STORAGE)', part)
            || CASE WHEN space IS NULL THEN '' ELSE format(' TABLESPACE %I', space) END;
    EXECUTE format('ALTER TABLE gradient_blobs ATTACH PARTITION %I FOR VALUES IN (%s)', part, p_session_id);
END
$$;

CREATE OR REPLACE FUNCTION gradient_blobs_drop_partition(p_session_id bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := gradient_blobs_partition(p_session_id);
    freed bigint;
BEGIN
    IF to_regclass(part) IS NULL THEN
        RETURN 0;
    END IF;
    freed := pg_total_relation_size(part::regclass);
    EXECUTE format('ALTER TABLE gradient_blobs DETACH PARTITION %I', part);
    EXECUTE format('DROP TABLE %I', part);
    RETURN freed;
END
$$;

CREATE OR REPLACE FUNCTION gradient_blobs_session_bytes(p_session_id bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(pg_total_relation_size(to_regclass(gradient_blobs_partition(p_session_id))), 0)
$$;

CREATE OR REPLACE FUNCTION training_sessions_gradient_partition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gradient_blobs_create_partition(NEW.id);
    RETURN NULL;
END
$$;
-- Fired by the trigger training_sessions_gradient_partition (AFTER INSERT ON training_sessions), created by
-- migration 0013 itself: this file holds functions only, so it can be re-run to check for drift.
