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

    # Ingest (issue: orchestrator write path).
    min_data_completeness: float = 0.8
    max_payload_bytes: int = 16 * 1024 * 1024
    max_clock_skew_s: float = 5.0

    # Outcomes and events.
    fee_rate: float = 0.0004
    slippage_rate: float = 0.0001
    velocity_window_min: int = 5
    velocity_threshold_pct_per_min: float = 0.25
    volatility_window_min: int = 15
    volatility_ewma_alpha: float = 0.02
    volatility_spike_multiplier: float = 3.0

    # Trainer and scheduling (the seed's EnhancedTrainingConfig).
    poll_interval_s: float = 1.0
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 30.0
    validation_interval_s: float = 60.0
    enable_background_validation: bool = True
    min_episodes_for_cnn_training: int = 100
    min_experiences_for_rl_training: int = 200
    min_profitability_for_replay: float = 0.1
    device: str = "auto"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
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
