"""Hardening after an outside attack (issue 18): server-side ingest rules, strict bounded input,
advisory locks for the trainer only, security-barrier views, internal views not granted to analysts.

Why:

* ``ingest_config`` (one row) holds the ingest validation rules; ``sql/functions/ingest/v0002.sql``
  reads them (over the built-in defaults) instead of trusting the caller's ``p_rules``, which only
  a trainer or the owner may still pass. A bad rule is a clear error (a CHECK on the row, and again
  on every call); a missing validation flag is stored as failed. Times are strict ISO 8601,
  metadata nesting (32) and size (64 KiB), timeframes (366 days), windows (integers),
  ``model_version`` and ``prediction_key`` (200 characters) are bounded.
* Any login could take the trainer's advisory locks and stall validation or refuse training.
  EXECUTE on the ``pg_advisory*`` functions is revoked from PUBLIC in this database and granted to
  ``trainsrv_trainer`` and the database owner (needs a superuser; otherwise a WARNING says what ops
  must run, see docs/security.md).
* Views become ``security_barrier`` (``app.db.views`` creates them so from now on), so a reader's
  function in a WHERE clause never sees rows a view filters out.
* The RL replay's internal views (``app.db.views.INTERNAL_VIEWS``) are no longer granted to analysts.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db import views
from app.paths import SQL_DIR

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

V1 = SQL_DIR / "functions" / "ingest" / "v0001.sql"
V2 = SQL_DIR / "functions" / "ingest" / "v0002.sql"
NEW_FUNCTIONS = (
    "ingest_caller_is_privileged()",
    "ingest_checked_rules(jsonb)",
    "ingest_rules(jsonb)",
    "ingest_complete_flags(jsonb)",
    "ingest_metadata_problem(jsonb)",
    "ingest_well_formed_v2(jsonb)",
    "ingest_short_text(text, jsonb, integer)",
)
# The entry points migration 0008 made SECURITY DEFINER; CREATE OR REPLACE resets that, so it is set again.
ENTRY_POINTS = (
    "ingest_record(jsonb, jsonb, jsonb)",
    "ingest_package(jsonb, jsonb)",
    "ingest_packages(jsonb[], jsonb)",
    "ingest_prediction(jsonb, jsonb)",
    "ingest_default_rules()",
)

# Every view of this schema (those other migrations add later are created as barriers by app.db.views).
ALL_VIEWS = (
    "SELECT c.oid::regclass AS v FROM pg_class c "
    "WHERE c.relkind = 'v' AND c.relnamespace = current_schema()::regnamespace"
)
ADVISORY = (
    "SELECT p.oid::regprocedure AS fn FROM pg_proc p "
    "WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE 'pg%advisory%'"
)


def upgrade():
    _run_sql(V2.read_text())  # first: the table's CHECK calls ingest_checked_rules
    op.create_table(
        "ingest_config",
        sa.Column("id", sa.SmallInteger, server_default=sa.text("1"), autoincrement=False, nullable=False),
        sa.Column("rules", postgresql.JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_config"),
        sa.CheckConstraint("id = 1", name="single_row"),
        sa.CheckConstraint("ingest_checked_rules(ingest_default_rules() || rules) IS NOT NULL", name="rules_valid"),
    )
    op.execute("INSERT INTO ingest_config (id) VALUES (1)")
    views.secure_functions(NEW_FUNCTIONS)
    _definer(ENTRY_POINTS)
    _advisory_locks(grant_public=False)
    _views(barrier=True)
    for name in sorted(views.INTERNAL_VIEWS):
        op.execute(f"REVOKE SELECT ON {name} FROM {views.ANALYST_ROLE}")


def downgrade():
    for name in sorted(views.INTERNAL_VIEWS):
        op.execute(f"GRANT SELECT ON {name} TO {views.ANALYST_ROLE}")
    _views(barrier=False)
    _advisory_locks(grant_public=True)
    # Version 1 again, in place (its functions exist, so CREATE becomes CREATE OR REPLACE).
    _run_sql(V1.read_text().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    _definer(ENTRY_POINTS)
    op.drop_table("ingest_config")  # before the functions its CHECK calls
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")


def _run_sql(text: str) -> None:
    # Several statements, no placeholder parsing (the functions use format() with %s / %L).
    op.get_bind().connection.driver_connection.execute(text)


def _definer(signatures) -> None:
    for signature in signatures:
        op.execute(f"ALTER FUNCTION {signature} SECURITY DEFINER SET search_path = public, pg_temp")


def _advisory_locks(grant_public: bool) -> None:
    action = "GRANT EXECUTE ON FUNCTION %s TO PUBLIC" if grant_public else "REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC"
    grant = (
        ""
        if grant_public
        else """
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO trainsrv_trainer', f.fn);
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f.fn, owner);"""
    )
    op.execute(f"""
        DO $$ DECLARE f record; owner name; BEGIN
            IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                RAISE WARNING 'not a superuser: EXECUTE on pg_advisory_* stays with PUBLIC; ask a superuser to '
                              'run the statements in docs/security.md (trainer locks)';
                RETURN;
            END IF;
            SELECT r.rolname INTO owner FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
             WHERE d.datname = current_database();
            FOR f IN {ADVISORY} LOOP
                EXECUTE format('{action}', f.fn);{grant}
            END LOOP;
        END $$""")


def _views(barrier: bool) -> None:
    op.execute(f"""
        DO $$ DECLARE r record; BEGIN
            FOR r IN {ALL_VIEWS} LOOP
                EXECUTE format('ALTER VIEW %s SET (security_barrier = {str(barrier).lower()})', r.v);
            END LOOP;
        END $$""")
