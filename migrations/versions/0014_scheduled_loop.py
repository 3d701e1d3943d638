"""v_cnn_replay v0002: CNN predictions only, and profit_r, the scale of the replay threshold.

Why: v0001 made an episode of every model kind's prediction, so a package called by the CNN and
the RL agent was two episodes (its profit counted twice in every sum over the view); and the
replay threshold was read on ``profitability_score``, where 0.5 is break-even and a loss still
scores up to 0.5, so a threshold of 0.1 let losing calls in. ``profit_r`` (the call's profit in
units of its risk, 0 = break-even) is the threshold's scale now: ``profit_r > 0`` is exactly
"profitable". No dependants read v_cnn_replay (the trainer's named queries do), so a plain drop
and create; the downgrade restores v0001.
"""

from app.db import views

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    views.replace("v_cnn_replay", 2)


def downgrade():
    views.replace("v_cnn_replay", 1)
