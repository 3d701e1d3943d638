"""Least-privilege database roles: orchestrator, analyst, trainer.

Why: the orchestrator, analysts and the trainer reach one database; each must be refused outside
its room. The roles are NOLOGIN groups; ops grant them to login users
(``GRANT trainsrv_analyst TO alice``). Migrations keep running as the owner.

* ``trainsrv_orchestrator`` — EXECUTE on the ingest entry points only. Those functions are
  SECURITY DEFINER (search_path pinned), so the role needs, and has, no table privileges:
  it can write packages and predictions through the validating functions and read nothing.
* ``trainsrv_analyst`` — SELECT on the documented views and EXECUTE on the similar-setup search
  (SECURITY DEFINER); no base table.
* ``trainsrv_trainer`` — read / write every table and sequence, EXECUTE every trainsrv function;
  no DDL. Future tables, sequences and functions created by the owner get the same grants.

PUBLIC loses EXECUTE on trainsrv's own functions (not on pgvector's). Roles are cluster-wide:
they are created when missing (the migrating user needs CREATEROLE the first time, or ops create
the three roles beforehand) and downgrade revokes this database's grants, dropping a role only
when no other database still uses it.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ROLES = ("trainsrv_orchestrator", "trainsrv_analyst", "trainsrv_trainer")
ORCHESTRATOR_FUNCTIONS = (
    "ingest_record(jsonb, jsonb, jsonb)",
    "ingest_package(jsonb, jsonb)",
    "ingest_packages(jsonb[], jsonb)",
    "ingest_prediction(jsonb, jsonb)",
    "ingest_default_rules()",
)
ANALYST_FUNCTIONS = ("similar_setups(bigint, integer)", "similar_setups_summary(bigint, integer)")
ANALYST_VIEWS = (
    "v_profitable_setups",
    "v_cnn_replay",
    "v_rl_replay",
    "v_rl_replay_stats",
    "v_session_value",
    "v_system_stats",
)

# trainsrv's own functions in this schema: everything but what extensions (pgvector) own.
OWN_FUNCTIONS = """
    SELECT p.oid::regprocedure AS fn FROM pg_proc p
    WHERE p.pronamespace = current_schema()::regnamespace
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
"""


def upgrade():
    for role in ROLES:
        op.execute(f"""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                    CREATE ROLE {role} NOLOGIN;
                END IF;
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role {role} is missing and this user may not create it: '
                    'ask ops to run CREATE ROLE {role} NOLOGIN, then migrate again';
            END $$""")
    op.execute("GRANT USAGE ON SCHEMA public TO " + ", ".join(ROLES))
    _secure_own_functions()
    for fn in ORCHESTRATOR_FUNCTIONS + ANALYST_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {fn} SECURITY DEFINER SET search_path = public, pg_temp")
    for fn in ORCHESTRATOR_FUNCTIONS:
        op.execute(f"GRANT EXECUTE ON FUNCTION {fn} TO trainsrv_orchestrator")
    for fn in ANALYST_FUNCTIONS:
        op.execute(f"GRANT EXECUTE ON FUNCTION {fn} TO trainsrv_analyst")
    op.execute(f"GRANT SELECT ON {', '.join(ANALYST_VIEWS)} TO trainsrv_analyst")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO trainsrv_trainer")
    op.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO trainsrv_trainer")
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO trainsrv_trainer"
    )
    op.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO trainsrv_trainer")
    op.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC")
    op.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO trainsrv_trainer")


def _secure_own_functions():
    op.execute(f"""
        DO $$ DECLARE f record; BEGIN
            FOR f IN {OWN_FUNCTIONS} LOOP
                EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f.fn);
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO trainsrv_trainer', f.fn);
            END LOOP;
        END $$""")


def downgrade():
    op.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE EXECUTE ON FUNCTIONS FROM trainsrv_trainer")
    op.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO PUBLIC")
    op.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM trainsrv_trainer")
    op.execute(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        "REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM trainsrv_trainer"
    )
    for fn in ORCHESTRATOR_FUNCTIONS + ANALYST_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {fn} SECURITY INVOKER RESET search_path")
    op.execute(f"""
        DO $$ DECLARE f record; BEGIN
            FOR f IN {OWN_FUNCTIONS} LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f.fn);
            END LOOP;
        END $$""")
    for role in ROLES:
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            op.execute(f"REVOKE ALL ON ALL {kind} IN SCHEMA public FROM {role}")
        op.execute(f"REVOKE USAGE ON SCHEMA public FROM {role}")
        op.execute(f"""
            DO $$ BEGIN
                DROP ROLE {role};
            EXCEPTION WHEN dependent_objects_still_exist THEN
                NULL;  -- another database still grants to it; it stays
            END $$""")
