"""Initial v1 schema: market data, packages, predictions, outcomes, events, experiences,
training sessions / steps / gradients / checkpoints, the job queue, and v_system_stats.

Why one migration: this is the first released schema; later changes get their own numbered
migration. CHECK constraints carry the invariants so bad rows are refused by the database
itself, whichever client writes them.
"""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB

from app.db import views

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# CHECK names are short: the naming convention (app.db.models) prefixes them with ck_<table>_.
TSTZ = sa.DateTime(timezone=True)
NOW = sa.text("now()")
EMPTY = sa.text("'{}'::jsonb")
ACTIONS = "('long', 'short', 'hold')"


def finite(*cols):
    return " AND ".join(f"({c} < 'Infinity'::float8 AND {c} > '-Infinity'::float8)" for c in cols)


def upgrade():
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "candles",
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
        sa.Column("ts", TSTZ, nullable=False),
        sa.Column("open", sa.Float, nullable=False),
        sa.Column("high", sa.Float, nullable=False),
        sa.Column("low", sa.Float, nullable=False),
        sa.Column("close", sa.Float, nullable=False),
        sa.Column("volume", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "timeframe", "ts", name="pk_candles"),
        sa.CheckConstraint(finite("open", "high", "low", "close", "volume"), name="finite"),
        sa.CheckConstraint("low > 0", name="positive_prices"),
        sa.CheckConstraint("high >= greatest(open, close) AND low <= least(open, close)", name="ohlc_consistent"),
        sa.CheckConstraint("volume >= 0", name="volume_non_negative"),
        sa.CheckConstraint("timeframe ~ '^[0-9]+[smhdw]$'", name="timeframe_format"),
    )

    op.create_table(
        "input_packages",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("ts", TSTZ, nullable=False),
        sa.Column("payload", BYTEA, nullable=False),
        sa.Column("payload_format", sa.Text, nullable=False),
        sa.Column("data_hash", BYTEA, nullable=False),
        sa.Column("completeness_score", sa.Float, nullable=False),
        sa.Column("validation_flags", JSONB, server_default=EMPTY, nullable=False),
        sa.Column("is_valid", sa.Boolean, nullable=False),
        sa.Column("is_premium", sa.Boolean, server_default=sa.false(), nullable=False),
        sa.Column("embedding", Vector(32), nullable=True),
        sa.Column("metadata", JSONB, server_default=EMPTY, nullable=False),
        sa.Column("received_at", TSTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_input_packages"),
        sa.UniqueConstraint("data_hash", name="uq_input_packages_data_hash"),
        sa.CheckConstraint("completeness_score >= 0 AND completeness_score <= 1", name="completeness_range"),
        sa.CheckConstraint("octet_length(data_hash) = 32", name="hash_is_sha256"),
    )
    op.create_index("ix_input_packages_symbol_ts", "input_packages", ["symbol", "ts"])

    op.create_table(
        "predictions",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("prediction_key", sa.Text, nullable=False),
        sa.Column("package_id", sa.BigInteger, nullable=False),
        sa.Column("model_kind", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("predicted_move", sa.Float, nullable=True),
        sa.Column("predicted_pivot", sa.Float, nullable=True),
        sa.Column("horizon_s", sa.Integer, nullable=False),
        sa.Column("predicted_at", TSTZ, nullable=False),
        sa.Column("created_at", TSTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_predictions"),
        sa.UniqueConstraint("prediction_key", name="uq_predictions_prediction_key"),
        sa.ForeignKeyConstraint(["package_id"], ["input_packages.id"], name="fk_predictions_package_id_input_packages"),
        sa.CheckConstraint("model_kind IN ('cnn', 'rl', 'other')", name="known_model_kind"),
        sa.CheckConstraint(f"action IN {ACTIONS}", name="known_action"),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        sa.CheckConstraint("horizon_s > 0", name="positive_horizon"),
    )
    op.create_index("ix_predictions_package_id", "predictions", ["package_id"])
    op.create_index("ix_predictions_predicted_at", "predictions", ["predicted_at"])

    op.create_table(
        "outcomes",
        sa.Column("prediction_id", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("pending_reason", sa.Text, nullable=True),
        sa.Column("entry_price", sa.Float, nullable=True),
        sa.Column("exit_price", sa.Float, nullable=True),
        sa.Column("price_return", sa.Float, nullable=True),
        sa.Column("max_favorable_excursion", sa.Float, nullable=True),
        sa.Column("max_adverse_excursion", sa.Float, nullable=True),
        sa.Column("actual_profit", sa.Float, nullable=True),
        sa.Column("profitability_score", sa.Float, nullable=True),
        sa.Column("optimal_action", sa.Text, nullable=True),
        sa.Column("is_profitable", sa.Boolean, nullable=True),
        sa.Column("times_trained", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("last_trained_at", TSTZ, nullable=True),
        sa.Column("revision", sa.Integer, server_default=sa.text("1"), nullable=False),
        sa.Column("validated_at", TSTZ, nullable=True),
        sa.Column("updated_at", TSTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("prediction_id", name="pk_outcomes"),
        sa.ForeignKeyConstraint(
            ["prediction_id"], ["predictions.id"], ondelete="CASCADE", name="fk_outcomes_prediction_id_predictions"
        ),
        sa.CheckConstraint("status IN ('validated', 'pending')", name="known_status"),
        sa.CheckConstraint(f"optimal_action IS NULL OR optimal_action IN {ACTIONS}", name="known_optimal_action"),
        sa.CheckConstraint(
            "profitability_score IS NULL OR (profitability_score >= 0 AND profitability_score <= 1)",
            name="profitability_range",
        ),
        sa.CheckConstraint(
            "status <> 'validated' OR (actual_profit IS NOT NULL AND profitability_score IS NOT NULL "
            "AND optimal_action IS NOT NULL AND is_profitable IS NOT NULL AND validated_at IS NOT NULL)",
            name="validated_complete",
        ),
        sa.CheckConstraint("status <> 'pending' OR pending_reason IS NOT NULL", name="pending_has_reason"),
        sa.CheckConstraint("times_trained >= 0", name="times_trained_non_negative"),
    )

    op.create_table(
        "market_events",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("started_at", TSTZ, nullable=False),
        sa.Column("ended_at", TSTZ, nullable=False),
        sa.Column("magnitude", sa.Float, nullable=False),
        sa.Column("direction", sa.SmallInteger, nullable=False),
        sa.Column("params", JSONB, server_default=EMPTY, nullable=False),
        sa.Column("detected_at", TSTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_market_events"),
        sa.UniqueConstraint(
            "symbol", "timeframe", "kind", "started_at", name="uq_market_events_symbol_timeframe_kind_started_at"
        ),
        sa.CheckConstraint("kind IN ('velocity', 'volatility_spike')", name="known_kind"),
        sa.CheckConstraint("ended_at >= started_at", name="ordered_bounds"),
        sa.CheckConstraint("direction IN (-1, 0, 1)", name="known_direction"),
    )
    op.create_index("ix_market_events_symbol_started_at", "market_events", ["symbol", "started_at"])

    op.create_table(
        "experiences",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("prediction_id", sa.BigInteger, nullable=True),
        sa.Column("state_package_id", sa.BigInteger, nullable=False),
        sa.Column("next_state_package_id", sa.BigInteger, nullable=True),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("reward", sa.Float, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("optimal_action", sa.Text, nullable=True),
        sa.Column("is_profitable", sa.Boolean, nullable=False),
        sa.Column("priority", sa.Float, nullable=False),
        sa.Column("times_sampled", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("last_sampled_at", TSTZ, nullable=True),
        sa.Column("created_at", TSTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiences"),
        sa.UniqueConstraint("prediction_id", name="uq_experiences_prediction_id"),
        sa.ForeignKeyConstraint(
            ["prediction_id"], ["predictions.id"], ondelete="CASCADE", name="fk_experiences_prediction_id_predictions"
        ),
        sa.ForeignKeyConstraint(
            ["state_package_id"], ["input_packages.id"], name="fk_experiences_state_package_id_input_packages"
        ),
        sa.ForeignKeyConstraint(
            ["next_state_package_id"], ["input_packages.id"], name="fk_experiences_next_state_package_id_input_packages"
        ),
        sa.CheckConstraint(f"action IN {ACTIONS}", name="known_action"),
        sa.CheckConstraint(f"optimal_action IS NULL OR optimal_action IN {ACTIONS}", name="known_optimal_action"),
        sa.CheckConstraint("priority > 0 AND " + finite("priority"), name="positive_priority"),
        sa.CheckConstraint(finite("reward"), name="finite_reward"),
        sa.CheckConstraint("times_sampled >= 0", name="times_sampled_non_negative"),
    )
    op.create_index("ix_experiences_symbol_created_at", "experiences", ["symbol", "created_at"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("params", JSONB, server_default=EMPTY, nullable=False),
        sa.Column("state", sa.Text, server_default=sa.text("'queued'"), nullable=False),
        sa.Column("priority", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("attempts", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer, server_default=sa.text("3"), nullable=False),
        sa.Column("run_after", TSTZ, server_default=NOW, nullable=False),
        sa.Column("locked_by", sa.Text, nullable=True),
        sa.Column("heartbeat_at", TSTZ, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("result", JSONB, nullable=True),
        sa.Column("dedupe_key", sa.Text, nullable=True),
        sa.Column("created_at", TSTZ, server_default=NOW, nullable=False),
        sa.Column("started_at", TSTZ, nullable=True),
        sa.Column("finished_at", TSTZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.CheckConstraint("state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="known_state"),
        sa.CheckConstraint("attempts >= 0 AND max_attempts > 0", name="attempts_range"),
        sa.CheckConstraint("state <> 'running' OR locked_by IS NOT NULL", name="running_is_locked"),
    )
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        [sa.text("priority DESC"), "run_after", "id"],
        postgresql_where=sa.text("state = 'queued'"),
    )
    op.create_index(
        "ix_jobs_running_heartbeat", "jobs", ["heartbeat_at"], postgresql_where=sa.text("state = 'running'")
    )
    op.create_index(
        "uq_jobs_dedupe_key_active",
        "jobs",
        ["dedupe_key"],
        unique=True,
        postgresql_where=sa.text("state IN ('queued', 'running') AND dedupe_key IS NOT NULL"),
    )

    op.create_table(
        "training_sessions",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("model_kind", sa.Text, nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("config", JSONB, server_default=EMPTY, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("torch_version", sa.Text, nullable=False),
        sa.Column("trainsrv_version", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("status", sa.Text, server_default=sa.text("'running'"), nullable=False),
        sa.Column("capture_policy", sa.Text, nullable=False),
        sa.Column("replay_exact", sa.Boolean, nullable=False),
        sa.Column("parent_session_id", sa.BigInteger, nullable=True),
        sa.Column("job_id", sa.BigInteger, nullable=True),
        sa.Column("metrics", JSONB, server_default=EMPTY, nullable=False),
        sa.Column("best_loss", sa.Float, nullable=True),
        sa.Column("plateau_steps", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("converged", sa.Boolean, server_default=sa.false(), nullable=False),
        sa.Column("training_value", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", TSTZ, server_default=NOW, nullable=False),
        sa.Column("ended_at", TSTZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_training_sessions"),
        sa.ForeignKeyConstraint(
            ["parent_session_id"],
            ["training_sessions.id"],
            ondelete="SET NULL",
            name="fk_training_sessions_parent_session_id_training_sessions",
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL", name="fk_training_sessions_job_id_jobs"),
        sa.CheckConstraint("model_kind IN ('cnn', 'rl', 'other')", name="known_model_kind"),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'interrupted')", name="known_status"),
        sa.CheckConstraint("capture_policy IN ('full', 'every_k', 'half', 'none')", name="known_capture_policy"),
        sa.CheckConstraint("NOT replay_exact OR capture_policy = 'full'", name="exact_needs_full_capture"),
        sa.CheckConstraint("ended_at IS NULL OR ended_at >= started_at", name="ordered_times"),
    )

    op.create_table(
        "training_steps",
        sa.Column("session_id", sa.BigInteger, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("loss_total", sa.Float, nullable=False),
        sa.Column("loss_components", JSONB, server_default=EMPTY, nullable=False),
        sa.Column("grad_norm", sa.Float, nullable=True),
        sa.Column("learning_rate", sa.Float, nullable=False),
        sa.Column("batch_ids", ARRAY(sa.BigInteger), nullable=False),
        sa.Column("batch_profitability", JSONB, server_default=EMPTY, nullable=False),
        sa.Column("timings_ms", JSONB, server_default=EMPTY, nullable=False),
        sa.Column("gradients_stored", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TSTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("session_id", "step", name="pk_training_steps"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            ondelete="CASCADE",
            name="fk_training_steps_session_id_training_sessions",
        ),
        sa.CheckConstraint("step >= 0", name="step_non_negative"),
        sa.CheckConstraint("gradients_stored >= 0", name="gradients_stored_non_negative"),
    )

    op.create_table(
        "gradient_blobs",
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
        sa.PrimaryKeyConstraint("session_id", "step", "param_name", "chunk_index", name="pk_gradient_blobs"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            ondelete="CASCADE",
            name="fk_gradient_blobs_session_id_training_sessions",
        ),
        sa.CheckConstraint("chunk_index >= 0 AND chunk_index < chunk_count", name="chunk_in_range"),
        sa.CheckConstraint("byte_length = octet_length(data)", name="length_matches"),
        sa.CheckConstraint("octet_length(checksum) = 32", name="checksum_is_sha256"),
    )
    # Gradients are written once and read back in bulk; keep them out of TOAST compression.
    op.execute("ALTER TABLE gradient_blobs ALTER COLUMN data SET STORAGE EXTERNAL")

    op.create_table(
        "checkpoints",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("session_id", sa.BigInteger, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("params_hash", BYTEA, nullable=False),
        sa.Column("optimizer_hash", BYTEA, nullable=False),
        sa.Column("content_hash", BYTEA, nullable=False),
        sa.Column("byte_length", sa.BigInteger, nullable=False),
        sa.Column("state", BYTEA, nullable=False),
        sa.Column("created_at", TSTZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checkpoints"),
        sa.UniqueConstraint("session_id", "step", name="uq_checkpoints_session_id_step"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["training_sessions.id"],
            ondelete="CASCADE",
            name="fk_checkpoints_session_id_training_sessions",
        ),
        sa.CheckConstraint("kind IN ('start', 'periodic', 'final')", name="known_kind"),
        sa.CheckConstraint("step >= 0", name="step_non_negative"),
        sa.CheckConstraint(
            "octet_length(content_hash) = 32 AND octet_length(params_hash) = 32 AND octet_length(optimizer_hash) = 32",
            name="hashes_are_sha256",
        ),
    )
    op.execute("ALTER TABLE checkpoints ALTER COLUMN state SET STORAGE EXTERNAL")

    views.create("v_system_stats", 1)


def downgrade():
    views.drop("v_system_stats")
    for table in (
        "checkpoints",
        "gradient_blobs",
        "training_steps",
        "training_sessions",
        "jobs",
        "experiences",
        "market_events",
        "outcomes",
        "predictions",
        "input_packages",
        "candles",
    ):
        op.drop_table(table)
    op.execute("DROP EXTENSION IF EXISTS vector")
