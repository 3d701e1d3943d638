"""RL replay: a cheaper priority write-back (sql/functions/rl_replay_index/v0002.sql).

Why: writing back a batch's TD errors cost 11-12 ms for 256 experiences, most of it keeping the
sampling index: every changed weight moved its row to another quarter-octave bucket (non-HOT slot
updates, plus the tail rows that keep the buckets dense), through the generic AFTER UPDATE trigger.

* ``experiences`` gets fillfactor 90, so that a priority write-back is a HOT update (on pages
  written from now on; ``VACUUM FULL experiences`` applies it to existing ones);
* a row stays in its bucket while its new weight is within one octave below the bucket's top
  (``rl_replay_fits``; acceptance >= 1/2 for such rows, the sampling stays exact), so fewer rows move;
* ``rl_replay_write_back`` re-indexes the rows it writes itself (the trigger skips its UPDATE);
  the re-slotting reads, plans and writes (by ctid) in one statement;
* the sampler draws more candidates when a round falls short (acceptance may now be as low as 1/2).

Downgrade restores v0001 and rebuilds the index (v0001 expects every row in its natural bucket).
New functions get the privileges migration 0008 gives every trainsrv function.
"""

from alembic import op

from app.db import views

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# v0001 signatures that v0002 replaces by others, and v0002's own new signatures.
V1_ONLY = (
    "rl_replay_apply(bigint[], integer[], double precision[], double precision[], integer[], integer[], "
    "double precision[], double precision[])",
)
V2_ONLY = (
    "rl_replay_apply(bigint[], text[], boolean[], double precision[], double precision[], boolean)",
    "rl_replay_fits(double precision, integer)",
)


def upgrade():
    op.execute("ALTER TABLE experiences SET (fillfactor = 90)")
    views.create_function("rl_replay_index", 2)
    for signature in V1_ONLY:
        op.execute(f"DROP FUNCTION {signature}")
    views.secure_functions(V2_ONLY)


def downgrade():
    for signature in V2_ONLY:
        op.execute(f"DROP FUNCTION {signature}")
    views.create_function("rl_replay_index", 1)
    views.secure_functions(V1_ONLY)
    # v0002 leaves rows in buckets above their natural one; v0001's functions and checks expect the natural one.
    op.execute("SELECT rl_replay_rebuild()")
    op.execute("ALTER TABLE experiences RESET (fillfactor)")
