"""A simulated market for when no real candles are given: trends, ranges and volatility spikes.

Regime-switching log-price random walk on 1-minute bars. Each regime lasts an exponential
number of minutes and sets a drift and a volatility; spikes are short bursts of several times
the volatility, so the rapid-change detector and the premium logic have something to find.
Deterministic for a given seed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

REGIMES = {
    # name: (drift per minute, volatility per minute)
    "uptrend": (0.00012, 0.0009),
    "downtrend": (-0.00012, 0.0009),
    "range": (0.0, 0.0006),
}


@dataclasses.dataclass(frozen=True)
class MarketSpec:
    minutes: int = 20_000
    start: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    start_price: float = 40_000.0
    mean_regime_min: float = 600.0
    spikes_per_day: float = 1.5
    spike_minutes: int = 12
    spike_vol_multiplier: float = 6.0
    seed: int = 7
    # A price cycle on top of the walk (log amplitude in percent, period in minutes): 0 = none. With
    # one, the next half hour's direction can be read from the recent bars, so models have something
    # to learn and the model registry's promotion loop shows (trainsrv demo --cycle-pct).
    cycle_pct: float = 0.0
    cycle_period_min: float = 90.0


def simulate(spec: MarketSpec = MarketSpec()) -> dict[str, np.ndarray]:
    """1-minute OHLCV columns (``timestamp`` as datetime64[s], UTC) ready for ``ingest_candles``."""
    rng = np.random.default_rng(spec.seed)
    drift, vol = _regime_paths(spec, rng)
    vol = vol * _spike_multipliers(spec, rng)
    log_returns = drift + vol * rng.standard_normal(spec.minutes)
    cycle = spec.cycle_pct / 100.0 * np.sin(2 * np.pi * np.arange(spec.minutes) / spec.cycle_period_min)
    close = spec.start_price * np.exp(np.cumsum(log_returns) + cycle)
    open_ = np.concatenate([[spec.start_price], close[:-1]])
    # Intrabar range: the bar's own move plus a wick proportional to its volatility.
    wick = np.abs(rng.standard_normal((2, spec.minutes))) * vol * close * 0.5
    high = np.maximum(open_, close) + wick[0]
    low = np.minimum(open_, close) - wick[1]
    volume = 1e6 * (1 + 4 * vol / vol.min()) * rng.lognormal(0, 0.4, spec.minutes)
    start = np.datetime64(spec.start.replace(tzinfo=None), "s")
    timestamps = start + np.arange(spec.minutes) * np.timedelta64(60, "s")
    return {"timestamp": timestamps, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _regime_paths(spec: MarketSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    drift, vol = np.empty(spec.minutes), np.empty(spec.minutes)
    names = list(REGIMES)
    i = 0
    while i < spec.minutes:
        length = max(30, int(rng.exponential(spec.mean_regime_min)))
        d, v = REGIMES[names[rng.integers(len(names))]]
        drift[i : i + length], vol[i : i + length] = d, v
        i += length
    return drift, vol


def _spike_multipliers(spec: MarketSpec, rng: np.random.Generator) -> np.ndarray:
    multipliers = np.ones(spec.minutes)
    n_spikes = rng.poisson(spec.spikes_per_day * spec.minutes / 1440)
    for start in rng.integers(0, max(1, spec.minutes - spec.spike_minutes), size=n_spikes):
        multipliers[start : start + spec.spike_minutes] = spec.spike_vol_multiplier
    return multipliers
