#!/bin/sh
# Runs once, as the cluster superuser, when docker-compose's db volume is first initialised (the
# postgres image runs /docker-entrypoint-initdb.d/*.sh). It prepares least-privilege logins, so that
# nothing trainsrv runs connects as the superuser:
#
#   trainsrv_owner   LOGIN, owns the database and its public schema: runs the migrations (`migrate`)
#   trainsrv_worker  LOGIN, member of trainsrv_trainer: reads / writes rows, no DDL (`trainer`)
#   trainsrv_reader  LOGIN, member of trainsrv_analyst: the documented views only (psql, Grafana)
#
# plus the three NOLOGIN groups migration 0008 grants to, and the vector extension (creating it needs
# the superuser). Passwords come from the environment; re-running it changes nothing that exists.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v owner_pw="${TRAINSRV_OWNER_PASSWORD:?}" -v worker_pw="${TRAINSRV_WORKER_PASSWORD:?}" \
     -v reader_pw="${TRAINSRV_READER_PASSWORD:?}" <<'SQL'
CREATE EXTENSION IF NOT EXISTS vector;
SELECT format('CREATE ROLE %I NOLOGIN', r) FROM unnest(ARRAY['trainsrv_orchestrator', 'trainsrv_analyst',
       'trainsrv_trainer']) AS r WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', r, pw) FROM (VALUES ('trainsrv_owner', :'owner_pw'),
       ('trainsrv_worker', :'worker_pw'), ('trainsrv_reader', :'reader_pw')) AS v(r, pw)
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
GRANT trainsrv_trainer TO trainsrv_worker;
GRANT trainsrv_analyst TO trainsrv_reader;
SELECT format('ALTER DATABASE %I OWNER TO trainsrv_owner', current_database()) \gexec
ALTER SCHEMA public OWNER TO trainsrv_owner;
SQL
