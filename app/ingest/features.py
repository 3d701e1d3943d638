"""Indicator features computed from a close / volume history (oldest first).

Each function returns an array as long as its input; values that need more history than is
available are NaN, which makes a package built from too short a history fail the
``arrays_finite`` check instead of silently using made-up numbers.
"""

from __future__ import annotations

import numpy as np

# Names of the features ``package_from_candles`` computes on the 1-minute window.
NAMES = ("returns_1m", "rsi_14", "ema_ratio_12_26", "volatility_20", "volume_z_20")


def log_returns(close: np.ndarray) -> np.ndarray:
    out = np.full(len(close), np.nan)
    out[1:] = np.diff(np.log(close))
    return out


def ema(values: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average with alpha = 2 / (span + 1), NaN until ``span`` values are in."""
    alpha = 2.0 / (span + 1.0)
    out = np.empty(len(values))
    acc = values[0] if len(values) else 0.0
    for i, v in enumerate(values):
        acc = alpha * v + (1.0 - alpha) * acc
        out[i] = acc
    out[: span - 1] = np.nan
    return out


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's relative strength index in 0..100 (100 when there were no losses)."""
    out = np.full(len(close), np.nan)
    if len(close) <= period:
        return out
    delta = np.diff(close)
    gain, loss = np.clip(delta, 0, None), np.clip(-delta, 0, None)
    avg_gain, avg_loss = gain[:period].mean(), loss[:period].mean()
    for i in range(period, len(close)):
        if i > period:
            avg_gain = (avg_gain * (period - 1) + gain[i - 1]) / period
            avg_loss = (avg_loss * (period - 1) + loss[i - 1]) / period
        out[i] = 100.0 if avg_loss == 0 else 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return out


def rolling_std(values: np.ndarray, window: int) -> np.ndarray:
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        out[window - 1 :] = np.lib.stride_tricks.sliding_window_view(values, window).std(axis=1)
    return out


def rolling_z(values: np.ndarray, window: int) -> np.ndarray:
    """(x - rolling mean) / rolling std over ``window`` values; 0 where the std is 0."""
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        view = np.lib.stride_tricks.sliding_window_view(values, window)
        mean, std = view.mean(axis=1), view.std(axis=1)
        last = values[window - 1 :]
        out[window - 1 :] = np.divide(last - mean, std, out=np.zeros_like(std), where=std > 0)
    return out


def compute(close: np.ndarray, volume: np.ndarray) -> dict[str, np.ndarray]:
    """All features in ``NAMES`` over the whole history (the caller keeps the last window)."""
    returns = log_returns(close)
    return {
        "returns_1m": returns,
        "rsi_14": rsi(close, 14),
        "ema_ratio_12_26": ema(close, 12) / ema(close, 26) - 1.0,
        "volatility_20": rolling_std(returns, 20),
        "volume_z_20": rolling_z(np.log1p(volume), 20),
    }
