"""Build a ModelInputPackage from stored candles, without look-ahead.

Candles are stamped with their **open** time (the convention of the shared data). A bar is
"at or before ``ts``" when it has closed by then: ``bar open + bar length <= ts``. Higher
timeframes are resampled from the stored 1-minute candles (open of the first minute, max high,
min low, close of the last minute, summed volume), keeping only buckets that closed by ``ts``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import sqlalchemy as sa

from app.db import queries
from app.ingest import features as feats
from app.ingest import timeframes
from app.ingest.package import ModelInputPackage

DEFAULT_WINDOWS = {"1m": 60, "5m": 24, "15m": 16, "1h": 12}
# Extra source bars fetched before the longest window so indicators are warmed up.
WARMUP_BARS = 120


def package_from_candles(
    conn: sa.Connection,
    symbol: str,
    ts: dt.datetime,
    windows: dict[str, int] | None = None,
    *,
    source_timeframe: str = "1m",
    orderbook: Any = None,
    hidden_state: Any = None,
    metadata: dict[str, Any] | None = None,
) -> ModelInputPackage:
    """The package a model would have seen at ``ts``: OHLCV windows per timeframe (resampled
    from ``source_timeframe`` candles that closed by ``ts``) and the features in
    ``app.ingest.features.NAMES`` over the source window. Windows shorter than requested (not
    enough history) are kept short and get flagged when stored; ``windows`` is the declared shape.
    """
    windows = dict(DEFAULT_WINDOWS if windows is None else windows)
    package_ts = ts.astimezone(dt.UTC)
    source = _fetch(conn, symbol, source_timeframe, package_ts, windows)
    end_s = int(package_ts.timestamp())
    ohlcv, bar_ts = {}, {}
    for tf, n in windows.items():
        t, bars = resample(source["t"], source["bars"], timeframes.seconds(tf, f"windows.{tf}"), end_s)
        ohlcv[tf], bar_ts[tf] = bars[-n:], t[-n:]
    n_features = windows.get(source_timeframe, DEFAULT_WINDOWS["1m"])
    computed = feats.compute(source["bars"][:, 3], source["bars"][:, 4])
    return ModelInputPackage(
        symbol=symbol,
        ts=package_ts,
        ohlcv=ohlcv,
        bar_ts=bar_ts,
        features={k: v[-n_features:] for k, v in computed.items()},
        orderbook=orderbook,
        hidden_state=hidden_state,
        windows=windows,
        metadata={"source": "candles", "source_timeframe": source_timeframe, **(metadata or {})},
    )


def _fetch(
    conn: sa.Connection, symbol: str, timeframe: str, ts: dt.datetime, windows: dict[str, int]
) -> dict[str, np.ndarray]:
    step = timeframes.seconds(timeframe, "source_timeframe")
    span_s = max(n * timeframes.seconds(tf, f"windows.{tf}") for tf, n in windows.items())
    since = ts - dt.timedelta(seconds=span_s + WARMUP_BARS * step)
    until = ts - dt.timedelta(seconds=step)  # the last bar that has closed by ts
    rows = conn.execute(
        queries.get("ingest.candles_between"),
        {"symbol": symbol, "timeframe": timeframe, "since": since, "until": until},
    ).all()
    data = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 5)
    return {"t": np.array([r[0] for r in rows], dtype=np.int64), "bars": data}


def resample(t: np.ndarray, bars: np.ndarray, step_s: int, end_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate bars (open times ``t``, oldest first) into ``step_s`` buckets closed by ``end_s``."""
    buckets = t // step_s * step_s
    keep = buckets + step_s <= end_s
    buckets, bars = buckets[keep], bars[keep]
    if len(buckets) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 5))
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(buckets)] - 1
    out = np.column_stack(
        [
            bars[starts, 0],
            np.maximum.reduceat(bars[:, 1], starts),
            np.minimum.reduceat(bars[:, 2], starts),
            bars[ends, 3],
            np.add.reduceat(bars[:, 4], starts),
        ]
    )
    return buckets[starts].astype(np.int64), out
