"""Exact session replay speed (issue 8): replay steps/s ÷ original training steps/s, same session, same run.

Builds episodes from the real BTC-PERP candles, trains one CNN session with ``full`` capture and
periodic checkpoints (``app.trainer.cnn_train``), then replays the whole session from checkpoint
0 with ``--verify`` semantics (every checkpoint's parameter and optimizer hashes compared) a few
times. Training speed is taken two ways:

* loop: steps / the time the training loop spent in its steps (``training_steps.timings_ms.total``:
  forward, backward, clipping, capture incl. back-pressure from the writer, optimizer) — the
  conservative baseline;
* wall: steps / wall-clock of the whole ``train_cnn`` call (episode loading, evaluation and the
  final writer flush included).

Replay speed is steps / wall-clock of ``replay_session`` (rebuilding the model, loading the start
checkpoint, reading and checksum-verifying every gradient blob, optimizer steps, hashing at each
checkpoint).

    python bench/bench_session_replay.py [--epochs 8] [--batch-size 32] [--checkpoint-every 25] [--repeats 3]

Uses TRAINSRV_BENCH_DATABASE_URL, or a throw-away embedded PostgreSQL in a temp folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import get_settings  # noqa: E402
from app.db.engine import make_engine  # noqa: E402
from app.demo import candle_episodes as support  # noqa: E402
from app.recording import sessions  # noqa: E402
from app.recording.optim import OptimizerSpec  # noqa: E402
from app.session_replay import exact, options, rebuild  # noqa: E402
from app.trainer import cnn_train
from bench.common import bench_database, machine  # noqa: E402

CANDLES = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "data"
    / "nautilus-ftx-btc-perp-1m"
    / "btc-perp-20211231-20220201_1m.csv"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=int, default=1500, help="real 1-minute candles to build episodes from")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--checkpoint-every", type=int, default=25)
    p.add_argument("--model-config", type=json.loads, default={}, help="reference CNN config (default: defaults)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--train-threads",
        type=int,
        default=0,
        help="torch threads while training (0: torch's default); replay uses settings.replay_threads",
    )
    return p.parse_args()


def train(engine: sa.Engine, args: argparse.Namespace) -> tuple[dict, float]:
    opts = cnn_train.CnnTrainOptions(
        symbol=support.SYMBOL,
        min_profitability=0.0,
        max_episodes=1000,
        epochs=args.epochs,
        batch_size=args.batch_size,
        model_config=args.model_config,
        checkpoint_every=args.checkpoint_every,
        seed=1,
        device="cpu",
        optimizer=OptimizerSpec(lr=1e-3),
    )
    default_threads = torch.get_num_threads()
    if args.train_threads:
        torch.set_num_threads(args.train_threads)
    try:
        started = time.perf_counter()
        result = cnn_train.train_cnn(engine, opts)
        return result, time.perf_counter() - started
    finally:
        torch.set_num_threads(default_threads)


def loop_seconds(engine: sa.Engine, session_id: int) -> float:
    with engine.connect() as conn:
        total_ms = conn.execute(
            sa.text("SELECT sum((timings_ms ->> 'total')::float8) FROM training_steps WHERE session_id = :s"),
            {"s": session_id},
        ).scalar_one()
    return total_ms / 1000.0


def replay_seconds(engine: sa.Engine, session_id: int, repeats: int) -> tuple[list[float], exact.ReplayReport]:
    times, report = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        report = exact.replay_session(engine, session_id, options.ReplayOptions(verify=True))
        times.append(time.perf_counter() - started)
        if report.exact is not True:
            raise SystemExit(f"replay diverged: {report.divergence}")
    return times, report


def parameter_count(engine: sa.Engine, session_id: int) -> int:
    with engine.connect() as conn:
        row = sessions.get(conn, session_id)
    return sum(p.numel() for p in rebuild.build_model(row.model_kind, row.model_name, row.config).parameters())


def main() -> None:
    args = parse_args()
    if not CANDLES.exists():
        raise SystemExit(f"real candles not found at {CANDLES}")
    print(
        f"machine: {machine()}; torch {torch.__version__}, CPU only; training threads "
        f"{args.train_threads or torch.get_num_threads()}, replay threads {get_settings().replay_threads}"
    )
    with bench_database() as url:
        engine = make_engine(url)
        support.build_episodes(engine, CANDLES, minutes=args.minutes)
        result, train_wall = train(engine, args)
        sid, steps = result["session_id"], result["steps"]
        loop_s = loop_seconds(engine, sid)
        times, report = replay_seconds(engine, sid, args.repeats)
        params = parameter_count(engine, sid)
        engine.dispose()
    replay_s = statistics.median(times)
    train_loop_sps, train_wall_sps, replay_sps = steps / loop_s, steps / train_wall, steps / replay_s
    print(f"session {sid}: {steps} steps, {params} parameters, {len(report.checks)} checkpoints verified bit for bit")
    print(
        f"training: loop {train_loop_sps:.1f} steps/s ({loop_s:.2f} s), wall {train_wall_sps:.1f} steps/s "
        f"({train_wall:.2f} s)"
    )
    print(
        f"replay --verify: {replay_sps:.1f} steps/s (median of {args.repeats}: "
        f"{', '.join(f'{t:.2f}' for t in times)} s)"
    )
    print(f"ratio replay / training (loop baseline): {replay_sps / train_loop_sps:.2f}x   (target >= 3x)")
    print(f"ratio replay / training (wall baseline): {replay_sps / train_wall_sps:.2f}x")


if __name__ == "__main__":
    main()
