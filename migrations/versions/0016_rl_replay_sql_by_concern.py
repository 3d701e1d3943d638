"""RL replay SQL split by concern: ``rl_replay_index`` v0003 becomes three groups with the same
definitions (sql/functions/rl_replay_slots, rl_replay_draw, rl_replay_write_back, each v0001).

Why: the one 810-line file held 24 functions, so any change to the sampler or the write-back copied
the index's upkeep too. From here on a new version copies only the file of the concern it changes.
The functions are re-created from the new files (CREATE OR REPLACE with identical bodies keeps their
grants); the downgrade re-creates them from v0003.
"""

from app.db import views

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None

GROUPS = ("rl_replay_slots", "rl_replay_draw", "rl_replay_write_back")


def upgrade():
    for group in GROUPS:
        views.create_function(group, 1)


def downgrade():
    views.create_function("rl_replay_index", 3)
