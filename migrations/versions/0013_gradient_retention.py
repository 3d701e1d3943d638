"""Gradients at scale: gradient_blobs partitioned by session, and retention bookkeeping.

Why: full per-step capture writes hundreds of MB per step for large models and nothing removed it; a
``DELETE`` of a session's gradients is slow, bloats the table and left ``replay_exact = true`` behind.

* ``gradient_blobs`` becomes ``PARTITION BY LIST (session_id)`` with one partition per session
  (``gradient_blobs_s<id>``, sql/functions/gradient_partitions/v0001.sql): retention drops a session's
  gradients with DETACH + DROP TABLE. An AFTER INSERT trigger on ``training_sessions`` creates each new
  session's partition. Existing rows are copied into their sessions' partitions (the gradient bytes are
  written once more: the old table and the partitions coexist until the old table is dropped at the end of
  this migration, so it needs free disk for one more copy of ``gradient_blobs``);
* ``training_sessions``: ``keep`` (never prune), ``pruned`` ('gradients' | 'all'), ``pruned_at`` and
  ``pruned_reason``; a pruned session is never ``replay_exact``;
* ``v_sessions_protected``: the one rule of what retention must keep (a registry adds a version);
* ``v_system_stats`` v0002 counts a partitioned table's partitions.

``checkpoints`` keeps its primary key ``(id)``, the one key that a distribution by session would change
(docs/scaling.md): the model registry (migration 0015) references ``checkpoints(id)``.

Downgrade copies the partitions back into one plain table (pruned sessions stay without gradients and
``replay_exact = false``) and restores the rest.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA

from app.db import views

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TSTZ = sa.DateTime(timezone=True)
BLOB_COLUMNS = (
    "session_id, step, param_name, chunk_index, chunk_count, dtype, shape, codec, byte_length, checksum, data"
)
BLOB_VIEWS = ("v_session_value", "v_system_stats")
PARTITION_FUNCTIONS = (
    "gradient_blobs_partition(bigint)",
    "gradient_blobs_create_partition(bigint)",
    "gradient_blobs_drop_partition(bigint)",
    "gradient_blobs_session_bytes(bigint)",
    "training_sessions_gradient_partition()",
)


def _blob_table(name: str, **kw) -> None:
    op.create_table(
        name,
        sa.Column("session_id", sa.BigInteger, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("param_name", sa.Text, nullable=False),
        sa.Column("chunk_index", sa.Integer, nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("dtype", sa.Text, nullable=False),
        sa.Column("shape", ARRAY(sa.Integer), nullable=False),
        sa.Column("codec", sa.Text, nullable=False),
        sa.Column("byte_length", sa.Integer, nullable=False),
        sa.Column("checksum", BYTEA, nullable=False),
        sa.Column("data", BYTEA, nullable=False),
        sa.PrimaryKeyConstraint("session_id", "step", "param_name", "chunk_index", name=op.f(f"pk_{name}")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            ondelete="CASCADE",
            name=op.f("fk_gradient_blobs_session_id_training_sessions"),
        ),
        sa.CheckConstraint(
            "chunk_index >= 0 AND chunk_index < chunk_count", name=op.f("ck_gradient_blobs_chunk_in_range")
        ),
        sa.CheckConstraint("byte_length = octet_length(data)", name=op.f("ck_gradient_blobs_length_matches")),
        sa.CheckConstraint("octet_length(checksum) = 32", name=op.f("ck_gradient_blobs_checksum_is_sha256")),
        **kw,
    )
    # Gradients are written once and read back in bulk; keep them out of TOAST compression.
    op.execute(f"ALTER TABLE {name} ALTER COLUMN data SET STORAGE EXTERNAL")


def _same_tablespace(source: str, target: str) -> None:
    """Gradients kept on their own disk stay there (for the partitioned table: where new partitions go)."""
    op.execute(f"""
        DO $$ DECLARE space name; BEGIN
            SELECT t.spcname INTO space FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace
            WHERE c.oid = '{source}'::regclass;
            IF space IS NOT NULL THEN
                EXECUTE format('ALTER TABLE {target} SET TABLESPACE %I', space);
            END IF;
        END $$""")


def upgrade():
    op.add_column("training_sessions", sa.Column("keep", sa.Boolean, server_default=sa.false(), nullable=False))
    op.add_column("training_sessions", sa.Column("pruned", sa.Text, nullable=True))
    op.add_column("training_sessions", sa.Column("pruned_at", TSTZ, nullable=True))
    op.add_column("training_sessions", sa.Column("pruned_reason", sa.Text, nullable=True))
    op.create_check_constraint(
        op.f("ck_training_sessions_known_pruned"),
        "training_sessions",
        "pruned IS NULL OR pruned IN ('gradients', 'all')",
    )
    op.create_check_constraint(
        op.f("ck_training_sessions_pruned_not_exact"), "training_sessions", "pruned IS NULL OR NOT replay_exact"
    )
    op.create_check_constraint(
        op.f("ck_training_sessions_pruned_complete"),
        "training_sessions",
        "(pruned IS NULL) = (pruned_at IS NULL) AND (pruned IS NULL) = (pruned_reason IS NULL)",
    )

    for view in BLOB_VIEWS:  # they read gradient_blobs: re-created on the new table below
        views.drop(view)
    op.rename_table("gradient_blobs", "gradient_blobs_unpartitioned")
    op.execute(
        "ALTER TABLE gradient_blobs_unpartitioned RENAME CONSTRAINT pk_gradient_blobs "
        "TO pk_gradient_blobs_unpartitioned"
    )
    _blob_table("gradient_blobs", postgresql_partition_by="LIST (session_id)")
    _same_tablespace("gradient_blobs_unpartitioned", "gradient_blobs")
    views.create_function("gradient_partitions", 1)
    views.secure_functions(PARTITION_FUNCTIONS)
    op.execute(
        "CREATE TRIGGER training_sessions_gradient_partition AFTER INSERT ON training_sessions "
        "FOR EACH ROW EXECUTE FUNCTION training_sessions_gradient_partition()"
    )
    op.execute("SELECT gradient_blobs_create_partition(id) FROM training_sessions ORDER BY id")
    op.execute(f"INSERT INTO gradient_blobs ({BLOB_COLUMNS}) SELECT {BLOB_COLUMNS} FROM gradient_blobs_unpartitioned")
    op.drop_table("gradient_blobs_unpartitioned")

    views.create("v_session_value", 1)
    views.create("v_system_stats", 2)
    views.create("v_sessions_protected", 1)


def downgrade():
    views.drop("v_sessions_protected")
    for view in BLOB_VIEWS:
        views.drop(view)

    _blob_table("gradient_blobs_unpartitioned")
    _same_tablespace("gradient_blobs", "gradient_blobs_unpartitioned")
    op.execute(
        f"INSERT INTO gradient_blobs_unpartitioned ({BLOB_COLUMNS}) SELECT {BLOB_COLUMNS} "
        "FROM gradient_blobs ORDER BY session_id, step, param_name, chunk_index"
    )
    op.execute("DROP TRIGGER training_sessions_gradient_partition ON training_sessions")
    op.drop_table("gradient_blobs")  # and its partitions
    for signature in reversed(PARTITION_FUNCTIONS):
        op.execute(f"DROP FUNCTION {signature}")
    op.rename_table("gradient_blobs_unpartitioned", "gradient_blobs")
    op.execute("ALTER TABLE gradient_blobs RENAME CONSTRAINT pk_gradient_blobs_unpartitioned TO pk_gradient_blobs")
    views.create("v_session_value", 1)
    views.create("v_system_stats", 1)

    for name in ("pruned_complete", "pruned_not_exact", "known_pruned"):
        op.drop_constraint(op.f(f"ck_training_sessions_{name}"), "training_sessions", type_="check")
    for column in ("pruned_reason", "pruned_at", "pruned", "keep"):
        op.drop_column("training_sessions", column)
