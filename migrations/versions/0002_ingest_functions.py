"""Ingest functions: validation, hashing and idempotent storage of input packages and predictions.

Why in SQL: the orchestrator writes from any language, and the Python client must not apply
different rules than a plain-SQL caller. Both call these functions (``sql/functions/ingest``),
so the rules live in one place. No table changes: the v1 tables already hold every column.
"""

from alembic import op

from app.paths import SQL_DIR

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FUNCTIONS_FILE = SQL_DIR / "functions" / "ingest" / "v0001.sql"

# Every function the file creates, with its argument types, so downgrade drops exactly these.
SIGNATURES = (
    "ingest_record(jsonb, jsonb, jsonb)",
    "ingest_prediction(jsonb, jsonb)",
    "ingest_prediction_package(jsonb)",
    "ingest_horizon(jsonb)",
    "ingest_text(text, jsonb)",
    "ingest_number(text, jsonb, boolean)",
    "ingest_package(jsonb, jsonb)",
    "ingest_packages(jsonb[], jsonb)",
    "ingest_payload(jsonb, bigint)",
    "ingest_assess(jsonb, timestamptz, jsonb)",
    "ingest_field_present(jsonb)",
    "ingest_normalise(jsonb)",
    "ingest_well_formed(jsonb)",
    "ingest_check_window(text, jsonb)",
    "ingest_check_structure(jsonb)",
    "ingest_matrix_problem(jsonb, integer)",
    "ingest_flat_problem(jsonb)",
    "ingest_time(text, jsonb)",
    "ingest_timeframe_s(text)",
    "ingest_reject(text, text)",
    "ingest_default_rules()",
)


def upgrade():
    # Sent through the driver without parameters: several statements, no placeholder parsing
    # (the functions use format() with %s / %L).
    op.get_bind().connection.driver_connection.execute(FUNCTIONS_FILE.read_text())


def downgrade():
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION {signature}")
