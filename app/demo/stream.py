"""A market streamed in accelerated time through the client, as a live orchestrator would see it.

For each symbol a simulated market (``app.demo.market``) is cut at a start time: the history
before it (``warmup``) is loaded at once, the rest is released bar by bar as the market clock
passes each bar's close. The clock runs ``speed`` market seconds per wall second. Every
``every_min`` market minutes, for each symbol, the streamer builds the package its models
would have seen (``package_from_candles``: only bars closed by then), stores it through
``app.client.Client`` and stores the predictions a ``PredictionSource`` makes from it.

    from app.demo import stream
    counts = stream.run(engine, stream.StreamSpec(symbols=("SIM-A", "SIM-B"), speed=600, hours=4))

The prediction source is the hook for callers that want other calls than the demo's rule-based
stand-ins (momentum for ``cnn``, mean reversion for ``rl``): any callable
``source(package, package_id) -> list[Prediction]``, e.g. one that asks a deployed model.
Nothing here waits for the trainer: outcomes, events, experiences and training are left to
``trainsrv serve``'s scheduler. Run it as its own process with ``python -m app.demo.stream``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Callable

import numpy as np
import sqlalchemy as sa

from app.client import Client, Prediction
from app.demo import market, orchestrator
from app.ingest.builder import package_from_candles
from app.ingest.candles import ingest_candles
from app.ingest.package import ModelInputPackage

# Packages need 12 hours of history for their 1-hour window (and indicator warm-up).
WARMUP = dt.timedelta(hours=13)
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

PredictionSource = Callable[[ModelInputPackage, int], list[Prediction]]


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """What to stream: ``hours`` of market after ``warmup`` for each symbol, at ``speed``x."""

    symbols: tuple[str, ...] = ("SIM-A", "SIM-B")
    hours: float = 4.0
    speed: float = 600.0
    every_min: int = 5
    horizon_s: int = 900
    seed: int = 0
    warmup: dt.timedelta = WARMUP
    start: dt.datetime = START
    tick_s: float = 0.2
    # Volatility bursts per simulated day, so rapid-change events show up in a few market hours.
    spikes_per_day: float = 6.0
    # A learnable price cycle on top of the simulated walk (app.demo.market.MarketSpec.cycle_pct).
    cycle_pct: float = 0.0

    @property
    def stream_start(self) -> dt.datetime:
        return self.start + self.warmup

    @property
    def stream_end(self) -> dt.datetime:
        return self.stream_start + dt.timedelta(hours=self.hours)


def rule_models(seed: int = 11, horizon_s: int = 900) -> PredictionSource:
    """The demo's stand-in models: one ``cnn`` (momentum) and one ``rl`` (reversion) call per package."""
    rng = np.random.default_rng(seed)

    def source(package: ModelInputPackage, package_id: int) -> list[Prediction]:
        return orchestrator.calls(package, horizon_s, rng)

    return source


def read_candles_csv(path) -> dict[str, np.ndarray]:
    """1-minute OHLCV columns from a CSV with header ``timestamp,open,high,low,close,volume`` (UTC
    ISO times), sorted by time; rows that do not parse are skipped (``ingest`` reports them)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            try:
                ts = np.datetime64(row["timestamp"].strip().replace("Z", "").replace("+00:00", ""), "s")
                rows.append((ts, *(float(row[c]) for c in ("open", "high", "low", "close", "volume"))))
            except (KeyError, ValueError, TypeError):
                continue
    rows.sort(key=lambda r: r[0])
    columns = {"timestamp": np.array([r[0] for r in rows], dtype="datetime64[s]")}
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
        columns[name] = np.array([r[i] for r in rows], dtype=np.float64)
    return columns


def bar_spacing_s(columns: dict[str, np.ndarray]) -> int | None:
    """The most common spacing of the bars' open times in seconds (None with fewer than two bars)."""
    if len(columns["timestamp"]) < 2:
        return None
    gaps = np.diff(columns["timestamp"].astype("datetime64[s]").astype(np.int64))
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[counts.argmax()])


def require_one_minute(columns: dict[str, np.ndarray], path, timeframe: str = "1m") -> None:
    """Refuse, saying why, a candle file that is not 1-minute bars: packages are resampled from 1-minute
    candles and outcomes / events are labelled on the global TRAINSRV_OUTCOME_TIMEFRAME /
    TRAINSRV_EVENT_TIMEFRAME (1m), so other bars would end in invalid packages and pending outcomes."""
    from app.errors import TrainsrvError

    spacing = bar_spacing_s(columns)
    if timeframe != "1m":
        raise TrainsrvError(
            f"--timeframe {timeframe}: only 1-minute candles can be streamed (packages are "
            "resampled from 1-minute bars; outcome and event timeframes are global settings)"
        )
    if spacing is not None and spacing != 60:
        raise TrainsrvError(
            f"{path}: its bars are {spacing} s apart, not 1 minute; only 1-minute candles can be "
            "streamed (resample the file to 1-minute bars, or use the simulated market)"
        )


def simulated(spec: StreamSpec, index: int) -> dict[str, np.ndarray]:
    """The simulated market of the ``index``-th symbol: warm-up, streamed hours and the last horizon."""
    span = spec.warmup + dt.timedelta(hours=spec.hours, seconds=spec.horizon_s)
    return market.simulate(
        market.MarketSpec(
            minutes=int(span.total_seconds() // 60) + 2,
            start=spec.start,
            seed=spec.seed + 7 + index,
            start_price=40_000.0 / (index + 1),
            spikes_per_day=spec.spikes_per_day,
            cycle_pct=spec.cycle_pct,
        )
    )


class Streamer:
    """Releases candles and decisions as the accelerated market clock passes them."""

    def __init__(
        self,
        engine: sa.Engine,
        spec: StreamSpec,
        source: PredictionSource | None = None,
        on_decision: Callable[[str, dt.datetime], None] = lambda symbol, ts: None,
        markets: dict[str, dict[str, np.ndarray]] | None = None,
    ):
        """``markets``: 1-minute OHLCV columns per symbol (``timestamp`` as datetime64[s], from
        ``spec.start``) to stream instead of simulated ones."""
        self.engine, self.spec = engine, spec
        self.source = source or rule_models(spec.seed + 11, spec.horizon_s)
        self.on_decision = on_decision
        self.markets = markets or {sym: simulated(spec, i) for i, sym in enumerate(spec.symbols)}
        self.released = {sym: 0 for sym in spec.symbols}  # bars stored so far, per symbol
        self.next_decision = spec.stream_start
        self.counts = {"candles": 0, "packages": 0, "invalid_packages": 0, "predictions": 0, "decisions": 0}

    def run(self) -> dict:
        """Load the warm-up, then stream until the market end; returns counts and timings."""
        started = time.monotonic()
        self._release_until(self.spec.stream_start)
        wall0 = time.monotonic()
        with Client(self.engine) as client, self.engine.connect() as conn:
            while self.next_decision <= self.spec.stream_end:
                clock = self.spec.stream_start + dt.timedelta(seconds=(time.monotonic() - wall0) * self.spec.speed)
                clock = min(clock, self.spec.stream_end)
                # Decisions the clock has passed are taken in order, each seeing the market as of its
                # time (a slow machine falls behind the clock, never ahead of the decisions).
                while self.next_decision <= clock:
                    self._release_until(self.next_decision)
                    self._decide(client, conn, self.next_decision)
                    self.next_decision += dt.timedelta(minutes=self.spec.every_min)
                self._release_until(clock)
                time.sleep(self.spec.tick_s)
        # The last horizons need their bars too.
        self._release_until(self.spec.stream_end + dt.timedelta(seconds=self.spec.horizon_s + 60))
        return {
            **self.counts,
            "elapsed_s": round(time.monotonic() - started, 2),
            "market_start": self.spec.stream_start.isoformat(),
            "market_end": self.spec.stream_end.isoformat(),
        }

    def _release_until(self, clock: dt.datetime) -> None:
        # A 1-minute bar opening at t is released once the clock reaches its close (t + 60 s).
        limit = np.datetime64(clock.replace(tzinfo=None) - dt.timedelta(minutes=1), "s")
        for sym, columns in self.markets.items():
            upto = int(np.searchsorted(columns["timestamp"], limit, side="right"))
            if upto > self.released[sym]:
                chunk = {k: v[self.released[sym] : upto] for k, v in columns.items()}
                self.counts["candles"] += ingest_candles(self.engine, chunk, sym, "1m", progress=False).loaded
                self.released[sym] = upto

    def _decide(self, client: Client, conn: sa.Connection, ts: dt.datetime) -> None:
        for sym in self.spec.symbols:
            package = package_from_candles(conn, sym, ts)
            conn.rollback()  # end the read transaction: the next package sees newer candles
            stored = client.insert_package(package)
            self.counts["packages"] += 1
            self.counts["invalid_packages"] += not stored.is_valid
            for prediction in self.source(package, stored.package_id):
                client.insert_prediction(prediction, package_id=stored.package_id)
                self.counts["predictions"] += 1
            self.on_decision(sym, ts)
        self.counts["decisions"] += 1


def run(engine: sa.Engine, spec: StreamSpec, source: PredictionSource | None = None) -> dict:
    """Stream ``spec`` into the database behind ``engine``; returns what was written."""
    return Streamer(engine, spec, source).run()


def command_line(prog: str, description: str, argv: list[str] | None, stream_with) -> int:
    """An orchestrator process against the configured database: parse the stream's options, run
    ``stream_with(engine, spec)`` and print what it returns as one JSON line (shared by the stream and
    ``app.demo.live``)."""
    from app.db import engine as db_engine

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--symbols", default="SIM-A,SIM-B", help="comma-separated (default SIM-A,SIM-B)")
    p.add_argument("--hours", type=float, default=4.0, help="market hours to stream after the warm-up")
    p.add_argument("--speed", type=float, default=600.0, help="market seconds per wall second")
    p.add_argument("--every-min", type=int, default=5)
    p.add_argument("--horizon-s", type=int, default=900)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    spec = StreamSpec(
        symbols=tuple(s.strip() for s in args.symbols.split(",") if s.strip()),
        hours=args.hours,
        speed=args.speed,
        every_min=args.every_min,
        horizon_s=args.horizon_s,
        seed=args.seed,
    )
    engine = db_engine.get_engine()
    try:
        print(json.dumps(stream_with(engine, spec)), flush=True)
    finally:
        engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m app.demo.stream``: an orchestrator process against the configured database."""
    return command_line("python -m app.demo.stream", __doc__.splitlines()[0], argv, run)


if __name__ == "__main__":
    sys.exit(main())
