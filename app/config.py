"""Settings, read once from the environment (prefix ``TRAINSRV_``).

Every field has a default that works out of the box: with no ``TRAINSRV_DATABASE_URL`` an
embedded PostgreSQL is started in ``TRAINSRV_DATA_DIR``. Areas read their own fields from the
one ``Settings`` object; add new fields here so ops find every knob in one place.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, get_type_hints

from app.errors import ConfigError

PREFIX = "TRAINSRV_"


@dataclasses.dataclass(frozen=True)
class Settings:
    # Database: an external URL, or the embedded server in data_dir.
    database_url: str | None = None
    data_dir: Path = Path(".trainsrv")
    db_connect_timeout_s: float = 10.0
    log_level: str = "INFO"
    # "text" (one human-readable line per record) or "json" (one JSON object per line) for stderr's log.
    log_format: str = "text"
    # The trainer logs a progress line every N recorded training steps (0: never).
    log_every_steps: int = 50

    # Ingest (issue: orchestrator write path).
    min_data_completeness: float = 0.8
    max_payload_bytes: int = 16 * 1024 * 1024
    max_clock_skew_s: float = 5.0
    # Fields whose presence makes a package complete (comma-separated dotted paths), see docs/ingest.md.
    package_required_fields: str = (
        "ohlcv.1m,ohlcv.5m,ohlcv.15m,ohlcv.1h,features.returns_1m,features.rsi_14,"
        "features.ema_ratio_12_26,features.volatility_20,features.volume_z_20,orderbook"
    )
    # Connections a bulk package load (Client.insert_packages) spreads its batches over.
    ingest_bulk_connections: int = 2

    # Outcomes and events.
    fee_rate: float = 0.0004
    slippage_rate: float = 0.0001
    velocity_window_min: int = 5
    velocity_threshold_pct_per_min: float = 0.25
    volatility_window_min: int = 15
    volatility_ewma_alpha: float = 0.02
    volatility_spike_multiplier: float = 3.0
    # Per-symbol velocity thresholds overriding the one above: "BTC-PERP=0.3,ETH-PERP=0.4".
    velocity_thresholds: str = ""
    # Candle series that outcomes are labelled from and events detected in.
    outcome_timeframe: str = "1m"
    event_timeframe: str = "1m"
    validation_batch_size: int = 250_000
    # RL experiences: a next state further away than this ends the episode (done).
    experience_max_gap_s: float = 900.0

    # Trainer and scheduling (the seed's EnhancedTrainingConfig).
    poll_interval_s: float = 1.0
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 30.0
    validation_interval_s: float = 60.0
    enable_background_validation: bool = True
    # Automatic training (app/jobs/scheduler.py): a symbol's train_cnn / train_rl job is enqueued once this
    # many NEW replay episodes / experiences exist since its last session (or job) of that kind.
    min_episodes_for_cnn_training: int = 100
    min_experiences_for_rl_training: int = 200
    # The replay threshold on v_cnn_replay's profit_r scale (profit after costs in units of risk, 0 =
    # break-even): auto CNN sessions train on episodes with profit_r above it; 0 = profitable calls only.
    min_profit_r_for_replay: float = 0.0
    # Which episodes auto CNN sessions train on: "all" (every episode; the default, because the walk-forward
    # experiments in docs/evidence.md found no advantage in filtering) or "profitable" (the seed's rule:
    # profit_r above min_profit_r_for_replay, hold examples kept).
    cnn_replay_mode: str = "all"
    # What auto jobs train, per model kind: the model factory (package.module:factory; empty = the
    # reference model), its config (JSON object) and the job's other parameters as a JSON object
    # (hyper-parameters: {"epochs": 3, "lr": 0.0005, "max_episodes": 1000, ...}; see `trainsrv jobs kinds`).
    auto_cnn_model: str = ""
    auto_cnn_model_config: str = ""
    auto_cnn_params: str = ""
    auto_rl_model: str = ""
    auto_rl_model_config: str = ""
    auto_rl_params: str = ""
    device: str = "auto"
    # Model inputs of new sessions (app/nets/inputs.py): window per timeframe ("package": each
    # timeframe's own window from the package; "shortest": all cut to the shortest; or "1m=30,5m=24")
    # and the package's feature arrays as extra channels ("all", "none", or names).
    input_windows: str = "package"
    input_features: str = "all"

    # Job queue (app/jobs): retries, scheduler cadence, extra handler modules (comma-separated).
    job_max_attempts: int = 3
    retry_backoff_base_s: float = 5.0
    retry_backoff_max_s: float = 600.0
    schedule_check_interval_s: float = 5.0
    # Kinds the maintenance lane of `trainsrv serve` runs (comma-separated): a second slot in the same
    # process that takes only these light jobs, so validation and events keep running while a model
    # trains in the main slot (which takes any kind). Empty: one slot only.
    maintenance_kinds: str = "validate_outcomes,detect_events,build_experiences,verify_integrity,noop"
    handler_modules: str = ""
    # False: poll only (e.g. behind a transaction-pooling PgBouncer, where LISTEN does not work).
    job_listen: bool = True
    # The trainer's queue-state writes (claim, finish, fail, rescue) skip the WAL flush wait. After
    # a database crash a lost one re-runs a job, never loses one; handlers' own writes keep full
    # durability. True: wait for the flush on every transition (fewer jobs/s on slow disks).
    job_synchronous_commit: bool = False

    # RL replay (app/rl_replay). alpha and the profit boost live in the database (rl_replay_config,
    # read by v_rl_replay); these are the sampler's side.
    rl_profitable_share: float = 0.5
    rl_beta_start: float = 0.4
    rl_beta_anneal_steps: int = 10_000
    rl_priority_epsilon: float = 1e-6
    # A sample (its draw log) and a priority write-back commit without waiting for the WAL flush
    # (3-4 ms on the 2-core test machines). After a database crash the last of them may be undone,
    # never half of one; the training steps themselves keep full durability. True: wait every time.
    rl_replay_synchronous_commit: bool = False
    # Write-backs between background folds of the replay's logs into experiences (app/rl_replay/buffer.py);
    # 0: fold only when the buffer closes.
    rl_replay_fold_every: int = 16

    # Model registry (app/registry, docs/models.md): the promotion gate. A candidate is promoted only when,
    # on its clean evaluation slice of at least gate_min_eval_episodes episodes, its profit per call beats
    # the best constant policy (always long / short / hold) by more than gate_profit_margin (a fraction of
    # the price) and its accuracy beats the slice's majority baseline by more than gate_accuracy_margin;
    # and, when a model is deployed, its profit per call and accuracy beat the deployed model's (on the
    # same slice) by more than gate_deployed_profit_margin / gate_deployed_accuracy_margin. A negative
    # deployed margin lets a fresher model through that is at most that much worse.
    gate_profit_margin: float = 0.0
    gate_accuracy_margin: float = 0.0
    gate_deployed_profit_margin: float = 0.0
    gate_deployed_accuracy_margin: float = 0.0
    gate_min_eval_episodes: int = 20

    # Exact replay (app/session_replay/exact.py): torch intra-op threads while replaying. Optimizer
    # updates of small parameter tensors are slower with more threads (wake-up costs); 0 keeps
    # torch's default. See docs/session_replay.md for why the count does not change the replayed bits.
    replay_threads: int = 1

    # Retention of gradients and checkpoints (app/retention, `trainsrv gc`, docs/retention.md). Never pruned:
    # v_sessions_protected (sessions marked keep, running or being replayed, and their lineage). Then the
    # newest N sessions per (model kind, symbol) keep everything; older ones lose their gradients after
    # gradient_max_age_days and their checkpoints too after checkpoint_max_age_days (0: never), and the
    # oldest lose their gradients while all gradients exceed gradient_budget_gb (0: no budget).
    gradient_keep_newest: int = 3
    gradient_max_age_days: float = 14.0
    checkpoint_max_age_days: float = 0.0
    gradient_budget_gb: float = 0.0
    # The scheduler enqueues one `gc` job per window of this many seconds (0: never).
    gc_interval_s: float = 3600.0
    # gc skips a session whose partition it cannot lock within this time (retried on its next run).
    gc_lock_timeout_s: float = 2.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); malformed values raise ConfigError."""
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(PREFIX + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, hints[field.name], raw)
        return cls(**values)


def _parse(name: str, kind: Any, raw: str) -> Any:
    env_name = PREFIX + name.upper()
    try:
        if kind is bool:
            return _parse_bool(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{env_name}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from None


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def set_settings(settings: Settings | None) -> None:
    """Replace the process-wide settings (tests, CLI overrides); None re-reads the environment."""
    global _current
    _current = settings
