"""The market an experiment walks through: a candle file or the simulated market, its decision times
and the package the orchestrator would have built at each (``app.ingest.builder``, from stored candles
that closed by then), built once in a scratch database and shared by every lane."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from app.demo import market
from app.demo.stream import read_candles_csv, require_one_minute
from app.ingest.builder import package_from_candles
from app.ingest.candles import ingest_candles
from app.ingest.package import ModelInputPackage

UTC = dt.UTC
# The package builder's longest window (12 one-hour bars) plus its indicator warm-up.
HISTORY = dt.timedelta(hours=13)


@dataclasses.dataclass(frozen=True)
class Series:
    name: str  # the file path, or "simulated:<seed>"
    symbol: str
    columns: dict[str, np.ndarray]  # 1-minute OHLCV, ``timestamp`` as datetime64[s] (bar open)

    @property
    def first(self) -> dt.datetime:
        return _utc(self.columns["timestamp"][0])

    @property
    def end(self) -> dt.datetime:
        """The close of the last bar."""
        return _utc(self.columns["timestamp"][-1]) + dt.timedelta(minutes=1)

    def upto(self, clock: dt.datetime) -> dict[str, np.ndarray]:
        """The bars that have closed by ``clock``."""
        limit = np.datetime64(clock.astimezone(UTC).replace(tzinfo=None) - dt.timedelta(minutes=1), "s")
        n = int(np.searchsorted(self.columns["timestamp"], limit, side="right"))
        return {k: v[:n] for k, v in self.columns.items()}

    def between(self, after: dt.datetime, clock: dt.datetime) -> dict[str, np.ndarray]:
        """The bars that closed in (``after``, ``clock``]."""
        lo = len(self.upto(after)["timestamp"])
        return {k: v[lo : len(self.upto(clock)["timestamp"])] for k, v in self.columns.items()}


def from_file(path: Path, symbol: str, bars: int | None = None) -> Series:
    columns = read_candles_csv(path)
    require_one_minute(columns, path)
    if bars is not None:
        columns = {k: v[:bars] for k, v in columns.items()}
    if len(columns["timestamp"]) < 24 * 60:
        raise ValueError(f"{path}: {len(columns['timestamp'])} one-minute bars; an experiment needs a day at least")
    return Series(str(path), symbol, columns)


def simulated(symbol: str, bars: int, seed: int = 7) -> Series:
    spec = market.MarketSpec(minutes=bars, seed=seed, spikes_per_day=6.0)
    return Series(f"simulated:{seed}", symbol, market.simulate(spec))


def decision_times(series: Series, every_min: int, horizon_s: int) -> list[dt.datetime]:
    """Every ``every_min`` minutes from the first time with enough history to the last with a full horizon."""
    start = series.first + HISTORY
    start = start.replace(minute=(start.minute // every_min) * every_min, second=0, microsecond=0)
    last = series.end - dt.timedelta(seconds=horizon_s + 60)
    times, t = [], start + dt.timedelta(minutes=every_min)
    while t <= last:
        times.append(t)
        t += dt.timedelta(minutes=every_min)
    return times


def build_packages(engine: sa.Engine, series: Series, times: list[dt.datetime]) -> list[ModelInputPackage]:
    """The package at each time, from the candles stored in ``engine``'s (scratch) database."""
    ingest_candles(engine, series.columns, series.symbol, "1m", progress=False)
    out = []
    with engine.connect() as conn:
        for ts in times:
            out.append(package_from_candles(conn, series.symbol, ts))
    return out


def _utc(value: np.datetime64) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(value.astype("datetime64[s]").astype(np.int64)), UTC)
