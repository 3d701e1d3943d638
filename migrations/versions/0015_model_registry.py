"""Model registry: lineage of warm-started sessions, deployments with their evidence, honest evaluation.

Why: a finished session ended as rows and a checkpoint; nothing said which model the orchestrator should
run, whether a re-trained one was better on data it never saw, or whether that evaluation was clean.

* ``training_sessions.init_session_id`` / ``init_checkpoint_id``: the checkpoint a session's weights
  started from (``--init``; NULL: random weights). RESTRICT: a model's lineage cannot be deleted from
  under it (gradient retention reads ``v_model_lineage`` to know what to keep).
* ``training_sessions.trained_through``: the latest data any item of its batches depends on
  (``session_trained_through``), set when a session succeeds and backfilled here; the contamination
  check (``model_contamination``) compares it, over the whole lineage, with an evaluation slice's start.
* ``model_deployments``: every promotion, refusal and rollback per (model_kind, symbol) with its
  evidence; the newest promotion or rollback is the deployed model (``v_deployed_models``). A trigger
  NOTIFYs ``trainsrv_models`` on promotions and rollbacks.
* Views: ``v_training_data_end``, ``v_rl_episodes`` (validated RL calls: the RL agent's evaluation slice),
  ``v_model_lineage``, ``v_deployed_models``, ``v_models``,
  ``v_model_live_performance``, and ``v_session_value`` v0002 (losses named raw / smoothed, RL evaluated,
  beats_baseline also against the best constant action and a clean slice).
* ``deployed_version`` / ``deployed_model`` (SECURITY DEFINER, granted to ``trainsrv_orchestrator``): the
  orchestrator reads the deployed model without any table privilege.
* ``ix_predictions_model_version``: live performance reads the predictions of one version.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db import views

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TSTZ = sa.TIMESTAMP(timezone=True)
ORCHESTRATOR_FUNCTIONS = ("deployed_version(text, text)", "deployed_model(text, text)")
FUNCTIONS = (
    "model_version(text, bigint)",
    "session_trained_through(bigint)",
    "model_contamination(bigint, timestamp with time zone)",
    "model_deployments_notify()",
)
NEW_VIEWS = ("v_rl_episodes", "v_deployed_models", "v_models", "v_model_lineage", "v_model_live_performance")


def upgrade():
    op.add_column("training_sessions", sa.Column("init_session_id", sa.BigInteger, nullable=True))
    op.add_column("training_sessions", sa.Column("init_checkpoint_id", sa.BigInteger, nullable=True))
    op.add_column("training_sessions", sa.Column("trained_through", TSTZ, nullable=True))
    op.create_foreign_key(
        "fk_training_sessions_init_session_id_training_sessions",
        "training_sessions",
        "training_sessions",
        ["init_session_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.create_foreign_key(
        "fk_training_sessions_init_checkpoint_id_checkpoints",
        "training_sessions",
        "checkpoints",
        ["init_checkpoint_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    # A session starts from one that already exists, so a lineage has no cycle.
    op.create_check_constraint(
        op.f("ck_training_sessions_init_before_self"),
        "training_sessions",
        "init_session_id IS NULL OR init_session_id < id",
    )
    op.create_check_constraint(
        op.f("ck_training_sessions_init_both_or_neither"),
        "training_sessions",
        "(init_session_id IS NULL) = (init_checkpoint_id IS NULL)",
    )
    op.create_table(
        "model_deployments",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("model_kind", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("session_id", sa.BigInteger, nullable=False),
        sa.Column("previous_session_id", sa.BigInteger, nullable=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", postgresql.JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("decided_at", TSTZ, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_deployments"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            ondelete="RESTRICT",
            name="fk_model_deployments_session_id_training_sessions",
        ),
        sa.ForeignKeyConstraint(
            ["previous_session_id"],
            ["training_sessions.id"],
            ondelete="RESTRICT",
            name="fk_model_deployments_previous_session_id_training_sessions",
        ),
        sa.CheckConstraint("model_kind IN ('cnn', 'rl')", name="known_model_kind"),
        sa.CheckConstraint("action IN ('promote', 'refuse', 'rollback')", name="known_action"),
    )
    op.create_index("ix_model_deployments_model_kind_symbol_id", "model_deployments", ["model_kind", "symbol", "id"])
    op.create_index("ix_model_deployments_session_id", "model_deployments", ["session_id"])
    op.create_index("ix_predictions_model_version", "predictions", ["model_version", "created_at"])
    views.create("v_training_data_end", 1)
    views.create_function("model_registry", 1)  # model_version first: the views call it
    views.secure_functions(FUNCTIONS)
    for name in NEW_VIEWS:
        views.create(name, 1)
    views.create_function("deployed_model", 1)  # reads v_deployed_models
    views.secure_functions(ORCHESTRATOR_FUNCTIONS)
    # The orchestrator reads no table; these two give it the deployed model, as ingest_* let it write.
    for signature in ORCHESTRATOR_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {signature} SECURITY DEFINER SET search_path = public, pg_temp")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO trainsrv_orchestrator")
    # Views call model_version with their reader's privileges.
    op.execute("GRANT EXECUTE ON FUNCTION model_version(text, bigint) TO trainsrv_analyst")
    op.execute(
        "CREATE TRIGGER model_deployments_notify AFTER INSERT ON model_deployments FOR EACH ROW "
        "WHEN (NEW.action IN ('promote', 'rollback')) EXECUTE FUNCTION model_deployments_notify()"
    )
    op.execute("UPDATE training_sessions SET trained_through = session_trained_through(id) WHERE status = 'succeeded'")
    views.replace("v_session_value", 2)


def downgrade():
    views.replace("v_session_value", 1)
    op.execute("DROP TRIGGER model_deployments_notify ON model_deployments")
    for signature in ORCHESTRATOR_FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
    for name in reversed(NEW_VIEWS):
        views.drop(name)
    for signature in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION {signature}")
    views.drop("v_training_data_end")
    op.drop_index("ix_predictions_model_version", table_name="predictions")
    op.drop_table("model_deployments")
    op.drop_constraint(op.f("ck_training_sessions_init_both_or_neither"), "training_sessions", type_="check")
    op.drop_constraint(op.f("ck_training_sessions_init_before_self"), "training_sessions", type_="check")
    op.drop_constraint("fk_training_sessions_init_checkpoint_id_checkpoints", "training_sessions", type_="foreignkey")
    op.drop_constraint(
        "fk_training_sessions_init_session_id_training_sessions", "training_sessions", type_="foreignkey"
    )
    op.drop_column("training_sessions", "trained_through")
    op.drop_column("training_sessions", "init_checkpoint_id")
    op.drop_column("training_sessions", "init_session_id")
