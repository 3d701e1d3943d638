"""SQLAlchemy 2.x typed models of the v1 schema.

The migrations are hand-written and authoritative; these models must match them exactly
(``trainsrv db check`` / ``alembic check`` compare the two). Views are not modelled here:
they are SQL files under ``sql/views`` and are read with named queries.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EMBEDDING_DIM = 32

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ACTIONS = ("long", "short", "hold")
MODEL_KINDS = ("cnn", "rl", "other")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
SESSION_STATES = ("running", "succeeded", "failed", "interrupted")
CAPTURE_POLICIES = ("full", "every_k", "half", "none")
EVENT_KINDS = ("velocity", "volatility_spike")
OUTCOME_STATES = ("validated", "pending")
PRUNED = ("gradients", "all")

TSTZ = sa.DateTime(timezone=True)
NOW = sa.text("now()")
EMPTY_JSON = sa.text("'{}'::jsonb")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _finite(*columns: str) -> str:
    # In PostgreSQL NaN sorts above +Infinity, so "< Infinity" rejects both NaN and +inf.
    return " AND ".join(f"({c} < 'Infinity'::float8 AND {c} > '-Infinity'::float8)" for c in columns)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Candle(Base):
    """One OHLCV bar; the price truth that outcomes are computed from."""

    __tablename__ = "candles"
    symbol: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    timeframe: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(TSTZ, primary_key=True)
    open: Mapped[float] = mapped_column(sa.Float)
    high: Mapped[float] = mapped_column(sa.Float)
    low: Mapped[float] = mapped_column(sa.Float)
    close: Mapped[float] = mapped_column(sa.Float)
    volume: Mapped[float] = mapped_column(sa.Float)
    __table_args__ = (
        sa.CheckConstraint(_finite("open", "high", "low", "close", "volume"), name="finite"),
        sa.CheckConstraint("low > 0", name="positive_prices"),
        sa.CheckConstraint("high >= greatest(open, close) AND low <= least(open, close)", name="ohlc_consistent"),
        sa.CheckConstraint("volume >= 0", name="volume_non_negative"),
        sa.CheckConstraint("timeframe ~ '^[0-9]+[smhdw]$'", name="timeframe_format"),
    )


class CandleCorrection(Base):
    """Migration 0003: a range of candles inserted or re-priced by one statement (trigger-written);
    the outcome validator re-labels outcomes whose windows overlap it, then deletes the entry."""

    __tablename__ = "candle_corrections"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    symbol: Mapped[str] = mapped_column(sa.Text)
    timeframe: Mapped[str] = mapped_column(sa.Text)
    from_ts: Mapped[dt.datetime] = mapped_column(TSTZ)
    to_ts: Mapped[dt.datetime] = mapped_column(TSTZ)
    row_count: Mapped[int] = mapped_column(sa.Integer)
    recorded_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint("to_ts >= from_ts", name="ordered_bounds"),
        sa.CheckConstraint("row_count > 0", name="positive_row_count"),
    )


class InputPackage(Base):
    """What a model saw at time ``ts`` for ``symbol`` (the seed's ModelInputPackage)."""

    __tablename__ = "input_packages"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    symbol: Mapped[str] = mapped_column(sa.Text)
    ts: Mapped[dt.datetime] = mapped_column(TSTZ)
    payload: Mapped[bytes] = mapped_column(BYTEA)
    payload_format: Mapped[str] = mapped_column(sa.Text)
    data_hash: Mapped[bytes] = mapped_column(BYTEA, unique=True)
    completeness_score: Mapped[float] = mapped_column(sa.Float)
    validation_flags: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    is_valid: Mapped[bool] = mapped_column(sa.Boolean)
    is_premium: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    embedding: Mapped[Any | None] = mapped_column(Vector(EMBEDDING_DIM), nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=EMPTY_JSON)
    received_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint("completeness_score >= 0 AND completeness_score <= 1", name="completeness_range"),
        sa.CheckConstraint("octet_length(data_hash) = 32", name="hash_is_sha256"),
        sa.Index("ix_input_packages_symbol_ts", "symbol", "ts"),
        # Migration 0007: similar-setup search (cosine distance).
        sa.Index(
            "ix_input_packages_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 32, "ef_construction": 128},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


class Prediction(Base):
    """A model's call made from one package; inserted by the orchestrator."""

    __tablename__ = "predictions"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    prediction_key: Mapped[str] = mapped_column(sa.Text, unique=True)
    package_id: Mapped[int] = mapped_column(sa.ForeignKey("input_packages.id"))
    model_kind: Mapped[str] = mapped_column(sa.Text)
    model_version: Mapped[str] = mapped_column(sa.Text)
    action: Mapped[str] = mapped_column(sa.Text)
    confidence: Mapped[float] = mapped_column(sa.Float)
    predicted_move: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    predicted_pivot: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    horizon_s: Mapped[int] = mapped_column(sa.Integer)
    predicted_at: Mapped[dt.datetime] = mapped_column(TSTZ)
    created_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint(_in("model_kind", MODEL_KINDS), name="known_model_kind"),
        sa.CheckConstraint(_in("action", ACTIONS), name="known_action"),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        sa.CheckConstraint("horizon_s > 0", name="positive_horizon"),
        sa.Index("ix_predictions_package_id", "package_id"),
        sa.Index("ix_predictions_predicted_at", "predicted_at"),
        # Migration 0015: v_model_live_performance reads one version's predictions.
        sa.Index("ix_predictions_model_version", "model_version", "created_at"),
    )


class Outcome(Base):
    """What a prediction actually earned, computed only from candles after it (no look-ahead)."""

    __tablename__ = "outcomes"
    prediction_id: Mapped[int] = mapped_column(sa.ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(sa.Text)
    pending_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    entry_price: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    exit_price: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    price_return: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    max_favorable_excursion: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    max_adverse_excursion: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    actual_profit: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    profitability_score: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    optimal_action: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    is_profitable: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    times_trained: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    last_trained_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    revision: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("1"))
    validated_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint(_in("status", OUTCOME_STATES), name="known_status"),
        sa.CheckConstraint(f"optimal_action IS NULL OR {_in('optimal_action', ACTIONS)}", name="known_optimal_action"),
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


class MarketEvent(Base):
    """A rapid price change (velocity) or volatility spike; packages inside one are premium."""

    __tablename__ = "market_events"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    symbol: Mapped[str] = mapped_column(sa.Text)
    timeframe: Mapped[str] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.Text)
    started_at: Mapped[dt.datetime] = mapped_column(TSTZ)
    ended_at: Mapped[dt.datetime] = mapped_column(TSTZ)
    # Migration 0017: the close of the first bar that flagged the event (packages before it are not premium).
    known_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    magnitude: Mapped[float] = mapped_column(sa.Float)
    direction: Mapped[int] = mapped_column(sa.SmallInteger)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    detected_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint(_in("kind", EVENT_KINDS), name="known_kind"),
        sa.CheckConstraint("ended_at >= started_at", name="ordered_bounds"),
        sa.CheckConstraint("direction IN (-1, 0, 1)", name="known_direction"),
        sa.UniqueConstraint("symbol", "timeframe", "kind", "started_at"),
        sa.Index("ix_market_events_symbol_started_at", "symbol", "started_at"),
    )


class Experience(Base):
    """An RL transition with its realised outcome and replay priority."""

    __tablename__ = "experiences"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    symbol: Mapped[str] = mapped_column(sa.Text)
    prediction_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("predictions.id", ondelete="CASCADE"), nullable=True, unique=True
    )
    state_package_id: Mapped[int] = mapped_column(sa.ForeignKey("input_packages.id"))
    next_state_package_id: Mapped[int | None] = mapped_column(sa.ForeignKey("input_packages.id"), nullable=True)
    action: Mapped[str] = mapped_column(sa.Text)
    reward: Mapped[float] = mapped_column(sa.Float)
    done: Mapped[bool] = mapped_column(sa.Boolean)
    optimal_action: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    is_profitable: Mapped[bool] = mapped_column(sa.Boolean)
    priority: Mapped[float] = mapped_column(sa.Float)
    times_sampled: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    last_sampled_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint(_in("action", ACTIONS), name="known_action"),
        sa.CheckConstraint(f"optimal_action IS NULL OR {_in('optimal_action', ACTIONS)}", name="known_optimal_action"),
        sa.CheckConstraint("priority > 0 AND " + _finite("priority"), name="positive_priority"),
        sa.CheckConstraint(_finite("reward"), name="finite_reward"),
        sa.CheckConstraint("times_sampled >= 0", name="times_sampled_non_negative"),
        sa.Index("ix_experiences_symbol_created_at", "symbol", "created_at"),
    )


class Job(Base):
    """A unit of work for the trainer, claimed with FOR UPDATE SKIP LOCKED."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    state: Mapped[str] = mapped_column(sa.Text, server_default=sa.text("'queued'"))
    priority: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    attempts: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    max_attempts: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("3"))
    run_after: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    locked_by: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    started_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    __table_args__ = (
        sa.CheckConstraint(_in("state", JOB_STATES), name="known_state"),
        sa.CheckConstraint("attempts >= 0 AND max_attempts > 0", name="attempts_range"),
        sa.CheckConstraint("state <> 'running' OR locked_by IS NOT NULL", name="running_is_locked"),
        sa.Index(
            "ix_jobs_claim", sa.text("priority DESC"), "run_after", "id", postgresql_where=sa.text("state = 'queued'")
        ),
        sa.Index("ix_jobs_running_heartbeat", "heartbeat_at", postgresql_where=sa.text("state = 'running'")),
        sa.Index(
            "uq_jobs_dedupe_key_active",
            "dedupe_key",
            unique=True,
            postgresql_where=sa.text("state IN ('queued', 'running') AND dedupe_key IS NOT NULL"),
        ),
        # Migration 0004: "was this dedupe key ever enqueued?" (scheduler, any state).
        sa.Index("ix_jobs_dedupe_key", "dedupe_key", postgresql_where=sa.text("dedupe_key IS NOT NULL")),
    )


class TrainingSession(Base):
    """One training (or replay) run of a CNN or RL model."""

    __tablename__ = "training_sessions"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    model_kind: Mapped[str] = mapped_column(sa.Text)
    model_name: Mapped[str] = mapped_column(sa.Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    torch_version: Mapped[str] = mapped_column(sa.Text)
    trainsrv_version: Mapped[str] = mapped_column(sa.Text)
    device: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text, server_default=sa.text("'running'"))
    capture_policy: Mapped[str] = mapped_column(sa.Text)
    replay_exact: Mapped[bool] = mapped_column(sa.Boolean)
    parent_session_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("training_sessions.id", ondelete="SET NULL"), nullable=True
    )
    # Migration 0015: the checkpoint this session's weights started from (--init), and the latest data
    # its batches depend on (session_trained_through); see docs/models.md.
    init_session_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("training_sessions.id", ondelete="RESTRICT"), nullable=True
    )
    init_checkpoint_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey(
            "checkpoints.id",
            ondelete="RESTRICT",
            use_alter=True,
            name="fk_training_sessions_init_checkpoint_id_checkpoints",
        ),
        nullable=True,
    )
    trained_through: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    best_loss: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    plateau_steps: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    converged: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    training_value: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    ended_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    # Migration 0013, retention (app/retention): never prune (keep); what was pruned, when and why.
    keep: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    pruned: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    pruned_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    pruned_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    __table_args__ = (
        sa.CheckConstraint(_in("model_kind", MODEL_KINDS), name="known_model_kind"),
        sa.CheckConstraint(_in("status", SESSION_STATES), name="known_status"),
        sa.CheckConstraint(_in("capture_policy", CAPTURE_POLICIES), name="known_capture_policy"),
        sa.CheckConstraint("NOT replay_exact OR capture_policy = 'full'", name="exact_needs_full_capture"),
        sa.CheckConstraint("ended_at IS NULL OR ended_at >= started_at", name="ordered_times"),
        sa.CheckConstraint("init_session_id IS NULL OR init_session_id < id", name="init_before_self"),
        sa.CheckConstraint("(init_session_id IS NULL) = (init_checkpoint_id IS NULL)", name="init_both_or_neither"),
        sa.CheckConstraint(f"pruned IS NULL OR {_in('pruned', PRUNED)}", name="known_pruned"),
        sa.CheckConstraint("pruned IS NULL OR NOT replay_exact", name="pruned_not_exact"),
        sa.CheckConstraint(
            "(pruned IS NULL) = (pruned_at IS NULL) AND (pruned IS NULL) = (pruned_reason IS NULL)",
            name="pruned_complete",
        ),
        sa.CheckConstraint("init_session_id IS NULL OR init_session_id < id", name="init_before_self"),
        sa.CheckConstraint("(init_session_id IS NULL) = (init_checkpoint_id IS NULL)", name="init_both_or_neither"),
    )


class TrainingStep(Base):
    """One optimizer step: loss breakdown, gradient norm, batch and timings."""

    __tablename__ = "training_steps"
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("training_sessions.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    loss_total: Mapped[float] = mapped_column(sa.Float)
    loss_components: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    grad_norm: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    learning_rate: Mapped[float] = mapped_column(sa.Float)
    batch_ids: Mapped[list[int]] = mapped_column(ARRAY(sa.BigInteger))
    batch_profitability: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    timings_ms: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    gradients_stored: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    created_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint("step >= 0", name="step_non_negative"),
        sa.CheckConstraint("gradients_stored >= 0", name="gradients_stored_non_negative"),
    )


class GradientBlob(Base):
    """One chunk of one parameter's gradient at one step (lossless unless the session says not).

    Migration 0013: partitioned by LIST (session_id), one partition ``gradient_blobs_s<id>`` per session,
    created by a trigger on ``training_sessions`` and dropped by retention (sql/functions/gradient_partitions).
    """

    __tablename__ = "gradient_blobs"
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("training_sessions.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    param_name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    chunk_index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    chunk_count: Mapped[int] = mapped_column(sa.Integer)
    dtype: Mapped[str] = mapped_column(sa.Text)
    shape: Mapped[list[int]] = mapped_column(ARRAY(sa.Integer))
    codec: Mapped[str] = mapped_column(sa.Text)
    byte_length: Mapped[int] = mapped_column(sa.Integer)
    checksum: Mapped[bytes] = mapped_column(BYTEA)
    data: Mapped[bytes] = mapped_column(BYTEA)
    __table_args__ = (
        sa.CheckConstraint("chunk_index >= 0 AND chunk_index < chunk_count", name="chunk_in_range"),
        sa.CheckConstraint("byte_length = octet_length(data)", name="length_matches"),
        sa.CheckConstraint("octet_length(checksum) = 32", name="checksum_is_sha256"),
        {"postgresql_partition_by": "LIST (session_id)"},
    )


class Checkpoint(Base):
    """Model, optimizer and RNG state at a step, with a content hash: the anchor of exact replay."""

    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("training_sessions.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(sa.Integer)
    kind: Mapped[str] = mapped_column(sa.Text)
    params_hash: Mapped[bytes] = mapped_column(BYTEA)
    optimizer_hash: Mapped[bytes] = mapped_column(BYTEA)
    content_hash: Mapped[bytes] = mapped_column(BYTEA)
    byte_length: Mapped[int] = mapped_column(sa.BigInteger)
    state: Mapped[bytes] = mapped_column(BYTEA)
    created_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint(_in("kind", ("start", "periodic", "final")), name="known_kind"),
        sa.CheckConstraint("step >= 0", name="step_non_negative"),
        sa.CheckConstraint(
            "octet_length(content_hash) = 32 AND octet_length(params_hash) = 32 AND octet_length(optimizer_hash) = 32",
            name="hashes_are_sha256",
        ),
        sa.UniqueConstraint("session_id", "step"),
    )


class RlReplayConfig(Base):
    """Migration 0006: the one row of RL replay settings read by v_rl_replay (alpha, profit boost)
    and the running maximum priority that new experiences enter at."""

    __tablename__ = "rl_replay_config"
    id: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True, server_default=sa.text("1"), autoincrement=False)
    alpha: Mapped[float] = mapped_column(sa.Float, server_default=sa.text("0.6"))
    profit_boost: Mapped[float] = mapped_column(sa.Float, server_default=sa.text("2.0"))
    max_priority: Mapped[float] = mapped_column(sa.Float, server_default=sa.text("1.0"))
    __table_args__ = (
        sa.CheckConstraint("id = 1", name="single_row"),
        sa.CheckConstraint("alpha >= 0 AND alpha <= 1", name="alpha_range"),
        sa.CheckConstraint("profit_boost > 0 AND " + _finite("profit_boost"), name="positive_boost"),
        sa.CheckConstraint("max_priority > 0 AND " + _finite("max_priority"), name="positive_max_priority"),
    )


class RlReplayBucket(Base):
    """Migration 0006: row count and weight sum of one (symbol, class, quarter-octave weight bucket) of
    the RL sampling index; maintained by triggers (sql/functions/rl_replay_index)."""

    __tablename__ = "rl_replay_buckets"
    id: Mapped[int] = mapped_column(sa.Integer, sa.Identity(), primary_key=True)
    symbol: Mapped[str] = mapped_column(sa.Text)
    is_profitable: Mapped[bool] = mapped_column(sa.Boolean)
    bucket: Mapped[int] = mapped_column(sa.Integer)
    n: Mapped[int] = mapped_column(sa.BigInteger)
    weight_sum: Mapped[float] = mapped_column(sa.Float)
    __table_args__ = (
        sa.UniqueConstraint("symbol", "is_profitable", "bucket"),
        sa.CheckConstraint("n >= 0", name="n_non_negative"),
    )


class RlReplaySlot(Base):
    """Migration 0006: one replayable experience in the RL sampling index (dense slot per bucket)."""

    __tablename__ = "rl_replay_slots"
    experience_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    bucket_id: Mapped[int] = mapped_column(sa.Integer)
    slot: Mapped[int] = mapped_column(sa.Integer)
    weight: Mapped[float] = mapped_column(sa.Float)
    # Copied from experiences by trigger: what a sampled batch returns.
    priority: Mapped[float] = mapped_column(sa.Float)
    state_package_id: Mapped[int] = mapped_column(sa.BigInteger)
    next_state_package_id: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    action: Mapped[str] = mapped_column(sa.Text)
    reward: Mapped[float] = mapped_column(sa.Float)
    done: Mapped[bool] = mapped_column(sa.Boolean)
    optimal_action: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    __table_args__ = (
        # Not unique on purpose (see migration 0006); replay.index_check verifies slots are distinct.
        sa.Index("ix_rl_replay_slots_bucket_id_slot", "bucket_id", "slot"),
        sa.CheckConstraint("slot >= 0", name="slot_non_negative"),
        sa.CheckConstraint("weight > 0", name="positive_weight"),
    )


class RlReplayDraw(Base):
    """Migration 0006: one sampled RL batch whose draws are not yet folded into
    experiences.times_sampled (rl_replay_fold folds and deletes it)."""

    __tablename__ = "rl_replay_draws"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    drawn_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    experience_ids: Mapped[list[int]] = mapped_column(ARRAY(sa.BigInteger))


class RlReplayPriorityLog(Base):
    """Migration 0010: one priority write-back not yet folded into experiences.priority
    (rl_replay_fold folds and deletes it; the latest entry of an experience wins)."""

    __tablename__ = "rl_replay_priority_log"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    written_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    experience_ids: Mapped[list[int]] = mapped_column(ARRAY(sa.BigInteger))
    priorities: Mapped[list[float]] = mapped_column(ARRAY(sa.Float))
    __table_args__ = (
        sa.CheckConstraint("cardinality(experience_ids) = cardinality(priorities)", name="one_priority_per_id"),
    )


class IngestConfig(Base):
    """Migration 0011: the one row of ingest validation rules (``ingest_rules()`` reads it over the
    built-in defaults). Ops change it with SQL; callers of the ingest functions cannot."""

    __tablename__ = "ingest_config"
    id: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True, server_default=sa.text("1"), autoincrement=False)
    rules: Mapped[dict] = mapped_column(JSONB, server_default=EMPTY_JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint("id = 1", name="single_row"),
        sa.CheckConstraint("ingest_checked_rules(ingest_default_rules() || rules) IS NOT NULL", name="rules_valid"),
    )


DEPLOYMENT_ACTIONS = ("promote", "refuse", "rollback")


class ModelDeployment(Base):
    """Migration 0015: one decision of the model registry for a (model kind, symbol): a promotion, a
    refusal or a rollback, with its evidence. The newest promotion or rollback is the deployed model."""

    __tablename__ = "model_deployments"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    model_kind: Mapped[str] = mapped_column(sa.Text)
    symbol: Mapped[str] = mapped_column(sa.Text)
    action: Mapped[str] = mapped_column(sa.Text)
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("training_sessions.id", ondelete="RESTRICT"))
    previous_session_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("training_sessions.id", ondelete="RESTRICT"), nullable=True
    )
    source: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    decided_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint("model_kind IN ('cnn', 'rl')", name="known_model_kind"),
        sa.CheckConstraint(_in("action", DEPLOYMENT_ACTIONS), name="known_action"),
        sa.Index("ix_model_deployments_model_kind_symbol_id", "model_kind", "symbol", "id"),
        sa.Index("ix_model_deployments_session_id", "session_id"),
    )


EXPERIMENT_SOURCES = ("model", "live", "no_trade", "always_long")


class Experiment(Base):
    """Migration 0017: one walk-forward experiment (app/experiments): its series, settings and summary."""

    __tablename__ = "experiments"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.Text)
    series: Mapped[str] = mapped_column(sa.Text)
    symbol: Mapped[str] = mapped_column(sa.Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    status: Mapped[str] = mapped_column(sa.Text)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=EMPTY_JSON)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    ended_at: Mapped[dt.datetime | None] = mapped_column(TSTZ, nullable=True)
    __table_args__ = (
        sa.CheckConstraint("kind IN ('walk_forward')", name="known_kind"),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="known_status"),
    )


class ExperimentResult(Base):
    """Migration 0017: what one source (the round's model, the live calls, a baseline) earned on the window
    after a round, in one lane (family, arm, seed) of an experiment."""

    __tablename__ = "experiment_results"
    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(sa.ForeignKey("experiments.id", ondelete="CASCADE"))
    family: Mapped[str] = mapped_column(sa.Text)
    arm: Mapped[str] = mapped_column(sa.Text)
    seed: Mapped[int] = mapped_column(sa.Integer)
    round: Mapped[int] = mapped_column(sa.Integer)
    source: Mapped[str] = mapped_column(sa.Text)
    window_from: Mapped[dt.datetime] = mapped_column(TSTZ)
    window_to: Mapped[dt.datetime] = mapped_column(TSTZ)
    session_id: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    episodes: Mapped[int] = mapped_column(sa.Integer)
    calls: Mapped[int] = mapped_column(sa.Integer)
    total_profit: Mapped[float] = mapped_column(sa.Float)
    profit_per_call: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    hit_rate: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    accuracy: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    baseline_accuracy: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    hold_share: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    train_episodes: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    promoted: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    leakage_rows: Mapped[int] = mapped_column(sa.Integer, server_default=sa.text("0"))
    recorded_at: Mapped[dt.datetime] = mapped_column(TSTZ, server_default=NOW)
    __table_args__ = (
        sa.CheckConstraint("family IN ('cnn', 'rl')", name="known_family"),
        sa.CheckConstraint(_in("source", EXPERIMENT_SOURCES), name="known_source"),
        sa.UniqueConstraint(
            "experiment_id", "family", "arm", "seed", "round", "source", name="uq_experiment_results_lane_round_source"
        ),
    )
