"""A simulated orchestrator: walks the market and records packages and predictions through the
same client a real trading bot uses.

Every ``every_min`` minutes it builds the package its models would have seen (from stored
candles that closed by then), and records a CNN call and an RL call made from it. The stand-in
models are simple, transparent rules (momentum for the CNN, mean reversion for the RL agent)
with some noise, so outcomes are a realistic mix of wins and losses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator

import numpy as np
import sqlalchemy as sa

from app.client import Client, Prediction
from app.ingest.builder import package_from_candles
from app.ingest.package import ModelInputPackage


@dataclasses.dataclass(frozen=True)
class OrchestratorSpec:
    symbol: str
    start: dt.datetime
    end: dt.datetime
    every_min: int = 15
    horizon_s: int = 1800
    seed: int = 11


def decision_times(spec: OrchestratorSpec) -> Iterator[dt.datetime]:
    t = spec.start
    while t <= spec.end:
        yield t
        t += dt.timedelta(minutes=spec.every_min)


def run(engine: sa.Engine, spec: OrchestratorSpec, progress: Callable[[int], None] = lambda n: None) -> dict:
    """Record a package and two predictions at every decision time; returns counts."""
    rng = np.random.default_rng(spec.seed)
    counts = {"packages": 0, "invalid_packages": 0, "predictions": 0}
    with Client(engine) as client, engine.connect() as conn:
        for ts in decision_times(spec):
            package = package_from_candles(conn, spec.symbol, ts)
            conn.rollback()  # end the read transaction; each package sees the candles as of now
            stored = client.insert_package(package)
            counts["packages"] += 1
            counts["invalid_packages"] += not stored.is_valid
            for prediction in calls(package, spec.horizon_s, rng):
                client.insert_prediction(prediction, package_id=stored.package_id)
                counts["predictions"] += 1
            progress(1)
    return counts


def calls(package: ModelInputPackage, horizon_s: int, rng: np.random.Generator) -> list[Prediction]:
    closes = package.ohlcv["1m"][:, 3]
    if len(closes) < 16:
        return []
    momentum = closes[-1] / closes[-16] - 1
    noise = rng.normal(0, 0.0015)
    cnn = _action(momentum + noise, 0.0008)
    rl = _action(-(momentum + rng.normal(0, 0.0015)), 0.0015)
    return [
        Prediction(
            model_kind="cnn",
            model_version="demo-momentum-1",
            action=cnn,
            horizon_s=horizon_s,
            confidence=float(min(0.99, 0.5 + abs(momentum) * 50)),
            predicted_move=float(momentum),
        ),
        Prediction(
            model_kind="rl",
            model_version="demo-reversion-1",
            action=rl,
            horizon_s=horizon_s,
            confidence=float(min(0.99, 0.4 + abs(momentum) * 40)),
            predicted_move=float(-momentum),
        ),
    ]


def _action(signal: float, threshold: float) -> str:
    if signal > threshold:
        return "long"
    if signal < -threshold:
        return "short"
    return "hold"
