"""Model registry costs, each against a baseline measured in the same run (docs/models.md).

* the orchestrator's per-decision check ``Client.deployed_version`` vs a bare ``SELECT 1`` round trip;
* loading the deployed model (``Client.deployed_model``) and one call on a package vs the model's
  forward pass alone;
* one promotion gate (``promote_model``: re-evaluating candidate and deployed model on the slice);
* an RL batch drawn with the hold-out (``app.trainer.rl_holdout.sample``, 20 % held out) vs a plain draw.

    python bench/bench_models.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time

import sqlalchemy as sa
import torch
from common import bench_database

from app.client import Client
from app.config import Settings
from app.db.engine import make_engine
from app.demo import stream
from app.experiences.build import build_experiences
from app.ingest.builder import package_from_candles
from app.outcomes.validate import validate_outcomes
from app.recording.policy import CapturePolicy
from app.registry import gate
from app.rl_replay.buffer import ProfitWeightedExperienceBuffer
from app.trainer import cnn_train, rl_holdout, rl_train

LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--days", type=float, default=4.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}")
    with bench_database() as url:
        engine = make_engine(url)
        spec = stream.StreamSpec(
            symbols=("SIM",), hours=args.days * 24, speed=1e9, tick_s=0.0, every_min=15, horizon_s=1800, cycle_pct=1.0
        )
        stream.run(engine, spec)
        validate_outcomes(engine, Settings(), as_of=LATER)
        build_experiences(engine, Settings(), as_of=LATER)
        common = {"capture": CapturePolicy("none"), "device": "cpu", "init": "scratch"}
        first = cnn_train.train_cnn(
            engine, cnn_train.CnnTrainOptions(symbol="SIM", epochs=2, min_profitability=0.0, **common)
        )["session_id"]
        second = cnn_train.train_cnn(
            engine, cnn_train.CnnTrainOptions(symbol="SIM", epochs=3, min_profitability=0.0, seed=1, **common)
        )["session_id"]
        lenient = Settings(gate_profit_margin=-1, gate_accuracy_margin=-1, gate_min_eval_episodes=1)
        gate.run(engine, first, settings=lenient)
        t0 = time.perf_counter()
        decision = gate.run(engine, second, settings=lenient)
        gate_s = time.perf_counter() - t0
        print(
            f"gate: {decision.evidence['slice']['episodes']} episodes, candidate and deployed model re-evaluated: "
            f"{gate_s * 1000:.0f} ms"
        )

        with Client(engine) as client, engine.connect() as conn:
            raw = client._connection()
            select1 = timed(lambda: raw.execute("SELECT 1").fetchone(), args.repeat)
            version = timed(lambda: client.deployed_version("cnn", "SIM"), args.repeat)
            print(
                f"deployed_version: {version * 1000:.2f} ms vs SELECT 1 on the client's connection "
                f"{select1 * 1000:.2f} ms ({version / select1:.1f}x)"
            )
            load = timed(lambda: client.deployed_model("cnn", "SIM"), max(5, args.repeat // 20))
            model = client.deployed_model("cnn", "SIM")
            at = conn.execute(sa.text("SELECT max(ts) FROM input_packages")).scalar()
            package = package_from_candles(conn, "SIM", at)
            x = model.inputs([package])
            call = timed(lambda: model.call(package), args.repeat)
            with torch.no_grad():
                forward = timed(lambda: model.module(x), args.repeat)
            print(
                f"deployed_model load: {load * 1000:.1f} ms; call(package): {call * 1000:.2f} ms vs forward alone "
                f"{forward * 1000:.2f} ms ({call / forward:.1f}x: input normalisation)"
            )

        with engine.connect() as conn:
            cutoff, _ = rl_holdout.evaluation_slice(conn, "SIM", 0.2)
            allowed = rl_holdout.training_items(conn, "SIM", cutoff)
            total = conn.execute(sa.text("SELECT count(*) FROM experiences WHERE symbol = 'SIM'")).scalar()
            share = rl_holdout.keep_share(conn, "SIM", allowed)
        buffer = ProfitWeightedExperienceBuffer(engine, seed=3)
        plain, held = [], []
        for i in range(args.repeat // 4):
            for fn, out in (
                (lambda: buffer.sample(64, symbol="SIM"), plain),
                (lambda: rl_holdout.sample(buffer, allowed, 64, symbol="SIM", beta=0.4, keep_share=share), held),
            )[:: (-1) ** i]:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        buffer.close()
        ratio = statistics.median(held) / statistics.median(plain)
        print(
            f"RL batch of 64 with the hold-out ({len(allowed)} of {total} experiences allowed): "
            f"{statistics.median(held) * 1000:.2f} ms vs plain draw {statistics.median(plain) * 1000:.2f} ms "
            f"({ratio:.2f}x)"
        )
        rl = rl_train.train_rl(engine, rl_train.RlTrainOptions(symbol="SIM", steps=30, batch_size=64, **common))
        print(
            f"RL session of 30 steps with the greedy-policy evaluation: value {rl['training_value']}, "
            f"evaluated on {rl['evaluation']['episodes']} episodes"
        )
        engine.dispose()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
