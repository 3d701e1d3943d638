"""Detect rapid price changes in the candles and store them in ``market_events``.

The detection is the named query ``events.detect`` (window functions over the candles, one
statement); this module turns settings into its parameters. A run replaces the stored events
of the series it scans with what the candles show now, so re-running is idempotent, and marks
the input packages captured inside an event premium.
"""

from __future__ import annotations

import logging
import math

import sqlalchemy as sa

from app.config import Settings, get_settings
from app.db import locks, queries
from app.errors import ValidationError
from app.outcomes.grid import bar_seconds

log = logging.getLogger(__name__)


def detect_events(engine: sa.Engine, settings: Settings | None = None, *, symbol: str | None = None) -> dict:
    """Detect events for ``symbol`` (all symbols when None); returns counts found / written / premium."""
    settings = settings or get_settings()
    params = detection_params(settings, symbol)
    with engine.begin() as conn:
        locks.take(conn, "events.lock_detection", "event detection")
        counts = dict(conn.execute(queries.get("events.detect"), params).mappings().one())
    log.info("event detection: %s", counts)
    return counts


def detection_params(settings: Settings, symbol: str | None = None) -> dict:
    """The bound parameters of ``events.detect``; ValidationError names a bad setting."""
    bar_s = bar_seconds(settings.event_timeframe, "event_timeframe")
    symbols, values = velocity_thresholds(settings.velocity_thresholds)
    _positive("velocity_threshold_pct_per_min", settings.velocity_threshold_pct_per_min)
    _positive("volatility_spike_multiplier", settings.volatility_spike_multiplier)
    if not 0 < settings.volatility_ewma_alpha <= 1:
        raise ValidationError("volatility_ewma_alpha", f"must be in (0, 1], got {settings.volatility_ewma_alpha}")
    vol_bars = _bars("volatility_window_min", settings.volatility_window_min, bar_s)
    if vol_bars < 2:
        raise ValidationError("volatility_window_min", "must span at least 2 bars (a volatility needs 2 returns)")
    return {
        "timeframe": settings.event_timeframe,
        "bar_s": bar_s,
        "symbol": symbol,
        "vel_bars": _bars("velocity_window_min", settings.velocity_window_min, bar_s),
        "vel_window_min": float(settings.velocity_window_min),
        "velocity_threshold": settings.velocity_threshold_pct_per_min,
        "threshold_symbols": symbols,
        "threshold_values": values,
        "vol_bars": vol_bars,
        "alpha": settings.volatility_ewma_alpha,
        "multiplier": settings.volatility_spike_multiplier,
        # The baseline is trusted once it has seen about one EWMA time constant of bars.
        "warmup_bars": math.ceil(1 / settings.volatility_ewma_alpha),
    }


def velocity_thresholds(spec: str) -> tuple[list[str], list[float]]:
    """Parse ``"BTC-PERP=0.3,ETH-PERP=0.4"`` (per-symbol %/min thresholds) into two parallel lists."""
    symbols, values = [], []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, raw = item.partition("=")
        try:
            value = float(raw) if sep and name.strip() else math.nan
        except ValueError:
            value = math.nan
        if not value > 0 or math.isinf(value):
            raise ValidationError("velocity_thresholds", f"{item!r} is not SYMBOL=positive %/min (e.g. BTC-PERP=0.3)")
        symbols.append(name.strip())
        values.append(value)
    return symbols, values


def _positive(field: str, value: float) -> None:
    if not value > 0 or math.isinf(value):
        raise ValidationError(field, f"must be a positive number, got {value}")


def _bars(field: str, minutes: int, bar_s: int) -> int:
    bars, rest = divmod(minutes * 60, bar_s)
    if minutes < 1 or rest or bars < 1:
        raise ValidationError(field, f"{minutes} min is not a whole number (>= 1) of {bar_s} s bars")
    return bars


def largest(conn: sa.Connection, symbol: str | None = None, limit: int = 5) -> list[dict]:
    """The strongest stored events of each kind."""
    return [dict(r) for r in conn.execute(queries.get("events.largest"), {"symbol": symbol, "limit": limit}).mappings()]
