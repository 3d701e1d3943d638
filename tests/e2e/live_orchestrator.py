"""An orchestrator process for the model-loop test: streams a market with a learnable cycle through the
client and predicts with the deployed models (``app.demo.live``).

    python -m tests.e2e.live_orchestrator --symbol SIM-A --hours 16 --speed 300

The market is a sine cycle of the log price (80-minute period, 1.2 % amplitude) with small noise, so
the direction of the next 15 minutes can be read from the last window: trained models beat the
baselines, and the gate's decisions in the test depend on the registry, not on luck.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys

import numpy as np

from app.demo import live, stream


def waves(spec: stream.StreamSpec, index: int, period_min: float = 80.0, amplitude: float = 0.012) -> dict:
    span = spec.warmup + dt.timedelta(hours=spec.hours, seconds=spec.horizon_s)
    n = int(span.total_seconds() // 60) + 2
    rng = np.random.default_rng(spec.seed + index)
    t = np.arange(n)
    close = (
        40_000.0
        / (index + 1)
        * np.exp(amplitude * np.sin(2 * np.pi * t / period_min + index) + 0.0003 * rng.standard_normal(n))
    )
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.standard_normal((2, n))) * 0.0003 * close
    return {
        "timestamp": np.datetime64(spec.start.replace(tzinfo=None), "s") + t * np.timedelta64(60, "s"),
        "open": open_,
        "high": np.maximum(open_, close) + wick[0],
        "low": np.minimum(open_, close) - wick[1],
        "close": close,
        "volume": 1e6 * rng.lognormal(0, 0.3, n),
    }


def main(argv: list[str] | None = None) -> int:
    from app.db import engine as db_engine

    p = argparse.ArgumentParser()
    p.add_argument("--symbol", default="SIM-A")
    p.add_argument("--hours", type=float, default=16.0)
    p.add_argument("--speed", type=float, default=300.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    spec = stream.StreamSpec(symbols=(args.symbol,), hours=args.hours, speed=args.speed, every_min=5, horizon_s=900)
    engine = db_engine.get_engine()
    try:
        print(json.dumps(live.run(engine, spec, markets={args.symbol: waves(spec, 0)})), flush=True)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
