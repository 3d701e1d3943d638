"""RL replay: the priority write-back logs priorities instead of updating experiences
(sql/functions/rl_replay_index/v0003.sql).

Why: a write-back of 256 TD errors spent about 3 of its 9.4 ms updating random ``experiences`` rows,
whose pages are mostly outside shared_buffers, and about 5 ms moving index rows between buckets.

* ``rl_replay_priority_log``: one row per write-back (ids, priorities), not yet in
  ``experiences.priority``; ``v_rl_replay_pending_priorities`` gives the latest per experience and
  ``v_rl_replay_weights`` (v0002) uses it, so every view shows current priorities;
* ``rl_replay_write_back(ids, priorities, synchronous_commit)`` logs them and re-weighs the index rows in
  place when the bucket tolerates the new weight (four octaves, ``rl_replay_tolerates``), moving only the
  others; the draws of a batch are no longer folded by its write-back;
* ``rl_replay_fold(batches, compact_below)`` (replaces ``rl_replay_fold_draws()``) writes logged priorities
  and draws into ``experiences`` and, when the sampler's acceptance is below ``compact_below``, moves the rows
  a write-back left low in their bucket back within two octaves (``rl_replay_fits``, one octave in v0002);
* ``rl_replay_weight()``: the weighting formula, used by the view and the write-back.

Downgrade folds everything, restores v0002 and rebuilds the index (v0002 keeps rows within one octave).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db import views

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TSTZ = sa.TIMESTAMP(timezone=True)
V2_ONLY = ("rl_replay_write_back(bigint[], double precision[], bigint[], boolean)", "rl_replay_fold_draws()")
WEIGHT = "rl_replay_weight(double precision, boolean, double precision, double precision)"
V3_ONLY = (
    "rl_replay_write_back(bigint[], double precision[], boolean)",
    "rl_replay_fold(integer, double precision)",
    "rl_replay_tolerates(double precision, integer)",
    "rl_replay_acceptance()",
    WEIGHT,
)


def upgrade():
    op.create_table(
        "rl_replay_priority_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("written_at", TSTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("experience_ids", postgresql.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("priorities", postgresql.ARRAY(sa.Float), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rl_replay_priority_log"),
        sa.CheckConstraint("cardinality(experience_ids) = cardinality(priorities)", name="one_priority_per_id"),
    )
    # A write-back's 4 KB stay in the row, as rl_replay_draws' ids do: no TOAST round trip on insert and fold.
    op.execute(
        "ALTER TABLE rl_replay_priority_log ALTER COLUMN experience_ids SET STORAGE MAIN, "
        "ALTER COLUMN priorities SET STORAGE MAIN"
    )
    views.create_function("rl_replay_index", 3)  # rl_replay_weight first: the views call it
    views.create("v_rl_replay_pending_priorities", 1)
    views.redefine("v_rl_replay_weights", 2)  # same columns: the views on it stay
    for signature in V2_ONLY:
        op.execute(f"DROP FUNCTION {signature}")
    views.secure_functions(V3_ONLY)
    # v_rl_replay_weights calls it, and a view's functions run with its reader's privileges.
    op.execute(f"GRANT EXECUTE ON FUNCTION {WEIGHT} TO trainsrv_analyst")


def downgrade():
    op.execute("SELECT rl_replay_fold()")
    views.redefine("v_rl_replay_weights", 1)
    views.drop("v_rl_replay_pending_priorities")
    for signature in V3_ONLY:
        op.execute(f"DROP FUNCTION {signature}")
    views.create_function("rl_replay_index", 2)
    views.secure_functions(V2_ONLY)
    op.execute("SELECT rl_replay_rebuild()")
    op.drop_table("rl_replay_priority_log")
