"""RL replay served from SQL: v_rl_replay, v_rl_replay_stats and the sampling index behind them.

Why: the RL trainer samples experiences in proportion to priority^alpha (profit-weighted,
Schaul et al.) straight from PostgreSQL, 256 out of a million in a few milliseconds. That
needs an index maintained as experiences change, not a scan per batch:

* ``rl_replay_config`` (one row): alpha, profit_boost and the running maximum priority that new
  experiences enter at (an INSERT with a NULL priority gets it);
* ``rl_replay_slots``: one row per replayable experience with its sample weight, symbol, class
  (profitable or not), bucket floor(log2 weight) and a dense slot inside that bucket;
* ``rl_replay_buckets``: per symbol, class and bucket, the row count and weight sum.

Triggers keep the index in step with ``experiences`` (insert / update / delete / truncate), with
packages whose ``is_valid`` changes, and with the config (rebuild). The functions live in
``sql/functions/rl_replay_index/v0001.sql``; the sampling algorithm is described there.
Slots have no foreign key to experiences on purpose: the delete trigger removes them and
keeps the slots dense, which a cascading delete could not.
"""

import sqlalchemy as sa
from alembic import op

from app.db import views

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FINITE = "({c} < 'Infinity'::float8 AND {c} > '-Infinity'::float8)"

TRIGGERS = [
    ("rl_replay_default_priority", "experiences",
     "BEFORE INSERT ON experiences FOR EACH ROW WHEN (NEW.priority IS NULL)"),
    ("rl_replay_on_insert", "experiences",
     "AFTER INSERT ON experiences REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"),
    ("rl_replay_on_update", "experiences",
     "AFTER UPDATE ON experiences REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT"),
    ("rl_replay_on_delete", "experiences",
     "AFTER DELETE ON experiences REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"),
    ("rl_replay_on_truncate", "experiences", "AFTER TRUNCATE ON experiences FOR EACH STATEMENT"),
    ("rl_replay_on_package_validity", "input_packages",
     "AFTER UPDATE OF is_valid ON input_packages FOR EACH ROW WHEN (OLD.is_valid IS DISTINCT FROM NEW.is_valid)"),
    ("rl_replay_on_config", "rl_replay_config", "AFTER UPDATE OF alpha, profit_boost ON rl_replay_config FOR EACH STATEMENT"),
]

FUNCTIONS = [
    "rl_replay_on_config()", "rl_replay_on_package_validity()", "rl_replay_on_truncate()",
    "rl_replay_on_delete()", "rl_replay_on_update()", "rl_replay_on_insert()",
    "rl_replay_default_priority()", "rl_replay_raise_max(double precision)", "rl_replay_rebuild()",
    "rl_replay_add(bigint[])", "rl_replay_sync(bigint[])", "rl_replay_bucket(double precision)",
]


def upgrade():
    _create_tables()
    views.create("v_rl_replay", 1)
    views.create("v_rl_replay_stats", 1)
    views.create_function("rl_replay_index", 1)
    for name, _table, when in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {name}()")
    # Index what is already there (a no-op on a new database).
    op.execute("SELECT rl_replay_rebuild()")


def _create_tables():
    op.create_table(
        "rl_replay_config",
        sa.Column("id", sa.SmallInteger, server_default=sa.text("1"), nullable=False),
        sa.Column("alpha", sa.Float, server_default=sa.text("0.6"), nullable=False),
        sa.Column("profit_boost", sa.Float, server_default=sa.text("2.0"), nullable=False),
        sa.Column("max_priority", sa.Float, server_default=sa.text("1.0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rl_replay_config"),
        sa.CheckConstraint("id = 1", name="single_row"),
        sa.CheckConstraint("alpha >= 0 AND alpha <= 1", name="alpha_range"),
        sa.CheckConstraint("profit_boost > 0 AND " + FINITE.format(c="profit_boost"), name="positive_boost"),
        sa.CheckConstraint("max_priority > 0 AND " + FINITE.format(c="max_priority"), name="positive_max_priority"),
    )
    op.execute("INSERT INTO rl_replay_config (id) VALUES (1)")
    op.create_table(
        "rl_replay_buckets",
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("is_profitable", sa.Boolean, nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("weight_sum", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "is_profitable", "bucket", name="pk_rl_replay_buckets"),
        sa.CheckConstraint("n >= 0", name="n_non_negative"),
    )
    op.create_table(
        "rl_replay_slots",
        sa.Column("experience_id", sa.BigInteger, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("is_profitable", sa.Boolean, nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("experience_id", name="pk_rl_replay_slots"),
        # Checked at the end of each statement: rl_replay_sync moves rows through shared slots.
        sa.UniqueConstraint("symbol", "is_profitable", "bucket", "slot",
                            name="uq_rl_replay_slots_symbol_is_profitable_bucket_slot",
                            deferrable=True, initially="IMMEDIATE"),
        sa.CheckConstraint("slot >= 0", name="slot_non_negative"),
        sa.CheckConstraint("weight > 0", name="positive_weight"),
    )
    # Weights are rewritten on every priority update; leave room for HOT updates.
    op.execute("ALTER TABLE rl_replay_slots SET (fillfactor = 80)")


def downgrade():
    for name, table, _when in reversed(TRIGGERS):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    views.drop("v_rl_replay_stats")
    views.drop("v_rl_replay")
    for table in ("rl_replay_slots", "rl_replay_buckets", "rl_replay_config"):
        op.drop_table(table)
