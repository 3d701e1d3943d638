"""RL replay served from SQL: v_rl_replay, v_rl_replay_stats and the sampling index behind them.

Why: the RL trainer samples experiences in proportion to priority^alpha (profit-weighted,
Schaul et al.) straight from PostgreSQL, 256 out of a million in a few milliseconds. That
needs an index maintained as experiences change, not a scan per batch:

* ``rl_replay_config`` (one row): alpha, profit_boost and the running maximum priority that new
  experiences enter at (an INSERT with a NULL priority gets it);
* ``rl_replay_buckets``: per symbol, class (profitable or not) and quarter-octave weight bucket, a
  small integer id, the row count and the weight sum;
* ``rl_replay_slots``: one row per replayable experience with its bucket id, sample weight, a
  dense slot inside that bucket and a copy of the fields the trainer needs (what a draw probes and
  returns, so a batch reads no other table);
* ``rl_replay_draws``: draws of batches not yet folded into ``experiences.times_sampled`` (one row
  per batch; the batch's priority write-back folds it in the same UPDATE).

Views: ``v_rl_replay_pending_draws`` (those draws per experience), ``v_rl_replay_weights`` (the
weighting formula and exact sampling counts, every experience), ``v_rl_replay_totals`` (weight mass
and N per symbol and overall), ``v_rl_replay`` (replayable experiences with their probabilities) and
``v_rl_replay_stats`` (profitable vs unprofitable tracking).

Triggers keep the index in step with ``experiences`` (insert / update / delete / truncate), with
packages whose ``is_valid`` changes, and with the config (rebuild). The functions, and the sampler
``rl_replay_sample``, live in ``sql/functions/rl_replay_index/v0001.sql``; the algorithm is described
there. Slots have no foreign keys on purpose: the delete trigger removes them and keeps the slots
dense, which a cascading delete could not, and a foreign key check per moved slot would cost the
write-back path more than the rest of it.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db import views

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TSTZ = sa.DateTime(timezone=True)
FINITE = "({c} < 'Infinity'::float8 AND {c} > '-Infinity'::float8)"

TRIGGERS = [
    (
        "rl_replay_default_priority",
        "experiences",
        "BEFORE INSERT ON experiences FOR EACH ROW WHEN (NEW.priority IS NULL)",
    ),
    (
        "rl_replay_on_insert",
        "experiences",
        "AFTER INSERT ON experiences REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
    ),
    (
        "rl_replay_on_update",
        "experiences",
        "AFTER UPDATE ON experiences REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT",
    ),
    (
        "rl_replay_on_delete",
        "experiences",
        "AFTER DELETE ON experiences REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
    ),
    ("rl_replay_on_truncate", "experiences", "AFTER TRUNCATE ON experiences FOR EACH STATEMENT"),
    (
        "rl_replay_on_package_validity",
        "input_packages",
        "AFTER UPDATE OF is_valid ON input_packages FOR EACH ROW WHEN (OLD.is_valid IS DISTINCT FROM NEW.is_valid)",
    ),
    (
        "rl_replay_on_config",
        "rl_replay_config",
        "AFTER UPDATE OF alpha, profit_boost ON rl_replay_config FOR EACH STATEMENT",
    ),
]

FUNCTIONS = [
    "rl_replay_on_config()",
    "rl_replay_on_package_validity()",
    "rl_replay_on_truncate()",
    "rl_replay_on_delete()",
    "rl_replay_on_update()",
    "rl_replay_on_insert()",
    "rl_replay_default_priority()",
    "rl_replay_raise_max(double precision)",
    "rl_replay_rebuild()",
    "rl_replay_add(bigint[])",
    "rl_replay_reweigh(bigint[])",
    "rl_replay_sync(bigint[])",
    "rl_replay_apply(bigint[], integer[], double precision[], double precision[], integer[], integer[], "
    "double precision[], double precision[])",
    "rl_replay_ensure_buckets(text[], boolean[], integer[])",
    "rl_replay_fold_draws()",
    "rl_replay_write_back(bigint[], double precision[], bigint[], boolean)",
    "rl_replay_sample(text, integer, integer, double precision, boolean)",
    "rl_replay_draw(text, integer, integer, double precision)",
    "rl_replay_bucket(double precision)",
    "rl_replay_bucket_top(integer)",
]
VIEWS = ["v_rl_replay_pending_draws", "v_rl_replay_weights", "v_rl_replay_totals", "v_rl_replay", "v_rl_replay_stats"]


def upgrade():
    _create_tables()
    for name in VIEWS:
        views.create(name, 1)
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
        sa.Column("id", sa.Integer, sa.Identity(), nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("is_profitable", sa.Boolean, nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("weight_sum", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rl_replay_buckets"),
        sa.UniqueConstraint(
            "symbol", "is_profitable", "bucket", name="uq_rl_replay_buckets_symbol_is_profitable_bucket"
        ),
        sa.CheckConstraint("n >= 0", name="n_non_negative"),
    )
    op.create_table(
        "rl_replay_slots",
        sa.Column("experience_id", sa.BigInteger, nullable=False),
        sa.Column("bucket_id", sa.Integer, nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        # Copied from experiences by the rl_replay_index triggers: what a batch returns.
        sa.Column("priority", sa.Float, nullable=False),
        sa.Column("state_package_id", sa.BigInteger, nullable=False),
        sa.Column("next_state_package_id", sa.BigInteger, nullable=True),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("reward", sa.Float, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("optimal_action", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("experience_id", name="pk_rl_replay_slots"),
        sa.CheckConstraint("slot >= 0", name="slot_non_negative"),
        sa.CheckConstraint("weight > 0", name="positive_weight"),
    )
    # What a draw probes. Not a unique constraint on purpose: every write-back moves hundreds of rows
    # through slots that others leave in the same statement, so it would have to be deferrable, and its
    # per-row checks walk the dead versions piling up under a reused slot. rl_replay_apply keeps the slots
    # dense and distinct; replay.index_check verifies it.
    op.create_index("ix_rl_replay_slots_bucket_id_slot", "rl_replay_slots", ["bucket_id", "slot"])
    # A weight change inside its bucket rewrites only unindexed columns: leave room for HOT updates.
    op.execute("ALTER TABLE rl_replay_slots SET (fillfactor = 90)")
    op.create_table(
        "rl_replay_draws",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("drawn_at", TSTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("experience_ids", postgresql.ARRAY(sa.BigInteger), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rl_replay_draws"),
    )
    # A batch's ids (2 KB for 256) stay in the row: no TOAST round trip on insert and fold.
    op.execute("ALTER TABLE rl_replay_draws ALTER COLUMN experience_ids SET STORAGE MAIN")


def downgrade():
    for name, table, _when in reversed(TRIGGERS):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    for name in reversed(VIEWS):
        views.drop(name)
    for table in ("rl_replay_draws", "rl_replay_slots", "rl_replay_buckets", "rl_replay_config"):
        op.drop_table(table)
