-- Migrations (app/db/migrate.py).

-- name: lock
-- The migration lock, held until the migrating transaction ends (two `db upgrade`s run one after the other).
SELECT pg_advisory_xact_lock(hashtext('trainsrv.migrations'));
