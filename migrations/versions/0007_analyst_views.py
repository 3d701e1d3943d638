"""Analysts' side: v_profitable_setups, v_session_value, similar-setup search (HNSW index + SQL functions).

Why: analysts read profitable setups and similar past setups in SQL (psql, Grafana); the ranking
and the neighbour search live in the database so every client sees the same answer.
HNSW (m=32, ef_construction=128) on cosine distance: see docs/analysts.md for the recall / speed
trade-off (raise hnsw.ef_search for recall).
"""

from alembic import op

from app.db import views

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        "ix_input_packages_embedding_hnsw",
        "input_packages",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_with={"m": 32, "ef_construction": 128},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    views.create("v_profitable_setups", 1)
    views.create("v_session_value", 1)
    views.create_function("similar_setups", 1)
    views.create_function("similar_setups_summary", 1)


def downgrade():
    op.execute("DROP FUNCTION IF EXISTS similar_setups_summary(bigint, integer)")
    op.execute("DROP FUNCTION IF EXISTS similar_setups(bigint, integer)")
    views.drop("v_session_value")
    views.drop("v_profitable_setups")
    op.drop_index("ix_input_packages_embedding_hnsw", table_name="input_packages")
