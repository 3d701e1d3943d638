"""Walk-forward experiments and the leakage audit.

Why: "train only on profitable setups and the models get better" was a claim; an experiment measures it.
``trainsrv experiment walk-forward`` runs every (arm, seed) lane in its own database and stores what
each round's model did on the next window here, where analysts can query it:

* ``experiments``: one row per run (series, settings, status, machine load, summary).
* ``experiment_results``: one row per (experiment, family, arm, seed, round, source): the out-of-sample
  metrics of the round's model (``source = 'model'``), of the lane's live calls (``'live'``) and of the
  no-trade and always-long baselines on the same window.
* ``market_events.known_at``: the close of the first bar that flagged the event; a package is premium only
  when it was captured at or after it (before, the event was not yet visible at the package time).
* ``v_leakage_audit``: rows that must not exist (training data after an evaluation slice across a
  lineage, a package after its prediction, an outcome not priced from bars after its prediction, a
  premium mark before its event was known). ``trainsrv audit`` fails when it has rows.
* ``v_experiment_arms``: per experiment, family, arm and source: rounds, seeds, pooled profit per call.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db import views

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TSTZ = sa.TIMESTAMP(timezone=True)
NEW_VIEWS = ("v_leakage_audit", "v_experiment_arms")
TABLES = ("experiments", "experiment_results")


def upgrade():
    op.add_column("market_events", sa.Column("known_at", TSTZ, nullable=True))
    op.create_table(
        "experiments",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("series", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("config", postgresql.JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("summary", postgresql.JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", TSTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_at", TSTZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
        sa.CheckConstraint("kind IN ('walk_forward')", name="known_kind"),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="known_status"),
    )
    op.create_table(
        "experiment_results",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("experiment_id", sa.BigInteger, nullable=False),
        sa.Column("family", sa.Text, nullable=False),
        sa.Column("arm", sa.Text, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("window_from", TSTZ, nullable=False),
        sa.Column("window_to", TSTZ, nullable=False),
        sa.Column("session_id", sa.BigInteger, nullable=True),
        sa.Column("episodes", sa.Integer, nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("total_profit", sa.Float, nullable=False),
        sa.Column("profit_per_call", sa.Float, nullable=True),
        sa.Column("hit_rate", sa.Float, nullable=True),
        sa.Column("accuracy", sa.Float, nullable=True),
        sa.Column("baseline_accuracy", sa.Float, nullable=True),
        sa.Column("hold_share", sa.Float, nullable=True),
        sa.Column("train_episodes", sa.Integer, nullable=True),
        sa.Column("promoted", sa.Boolean, nullable=True),
        sa.Column("leakage_rows", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("recorded_at", TSTZ, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiment_results"),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            ondelete="CASCADE",
            name="fk_experiment_results_experiment_id_experiments",
        ),
        sa.CheckConstraint("family IN ('cnn', 'rl')", name="known_family"),
        sa.CheckConstraint("source IN ('model', 'live', 'no_trade', 'always_long')", name="known_source"),
        sa.UniqueConstraint(
            "experiment_id", "family", "arm", "seed", "round", "source", name="uq_experiment_results_lane_round_source"
        ),
    )
    for table in TABLES:
        op.execute(f"GRANT SELECT ON {table} TO trainsrv_analyst")
    for name in NEW_VIEWS:
        views.create(name, 1)


def downgrade():
    for name in reversed(NEW_VIEWS):
        views.drop(name)
    op.drop_table("experiment_results")
    op.drop_table("experiments")
    op.drop_column("market_events", "known_at")
