"""The CNN replay view ``v_cnn_replay``: training episodes and their training priority.

Why a migration: the priority formula (profitability, premium status, recency, times trained)
lives only in this view, so the trainer, analysts and Grafana all rank episodes the same way;
changing it means a new view version and a new migration. No table changes: sessions, steps,
gradient blobs and checkpoints are as created in 0001.
"""

from app.db import views

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    views.create("v_cnn_replay", 1)


def downgrade():
    views.drop("v_cnn_replay")
