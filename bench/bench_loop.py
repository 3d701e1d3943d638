"""The scheduled loop: validation cost against table freshness, and validation lag during training.

``freshness`` (target, issue 16: fresh <= 1.5x analysed): an orchestrator writes 2,000
predictions (1,000 packages, a CNN and an RL call each) over a simulated market through the
client, and ``validate_outcomes`` labels them right away — before autovacuum has analysed the new
rows. Then the outcomes are deleted, the tables ANALYZEd, and the same predictions labelled
again: the baseline, in the same run and database.

``lag`` (target: p99 <= validation interval + 5 s): ``trainsrv serve`` runs a >= 60 s training
job (a stand-in that only sleeps: the cost is the main lane being busy) while predictions whose
horizons end every second arrive in real time; lag is ``outcomes.validated_at`` minus the
horizon end, per prediction.

Usage: python bench/bench_loop.py freshness [--predictions 2000]
       python bench/bench_loop.py lag [--interval 15] [--train-s 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import sqlalchemy as sa
from common import bench_database, machine, percentile

from app.config import Settings  # noqa: E402  (common puts the checkout on sys.path)
from app.db.engine import make_engine  # noqa: E402
from app.demo import market, orchestrator  # noqa: E402
from app.ingest.candles import ingest_candles  # noqa: E402
from app.outcomes.validate import validate_outcomes  # noqa: E402
from app.paths import REPO_ROOT  # noqa: E402

SYMBOL = "SIM"
UTC = dt.UTC


def freshness(args) -> None:
    decisions = args.predictions // 2
    minutes = decisions * args.every_min + 13 * 60 + 2 * 24 * 60
    with bench_database() as url:
        engine = make_engine(url)
        ingest_candles(engine, market.simulate(market.MarketSpec(minutes=minutes)), SYMBOL, "1m", progress=False)
        start = market.MarketSpec().start + dt.timedelta(hours=13)
        spec = orchestrator.OrchestratorSpec(
            SYMBOL,
            start,
            start + dt.timedelta(minutes=args.every_min * (decisions - 1)),
            every_min=args.every_min,
            horizon_s=1800,
        )
        t = time.perf_counter()
        counts = orchestrator.run(engine, spec)
        write_s = time.perf_counter() - t
        settings = Settings()
        fresh = _label(engine, settings)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM outcomes"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
        analysed = _label(engine, settings)
        engine.dispose()
    print(f"machine: {machine()}")
    print(f"wrote {counts['packages']} packages and {counts['predictions']} predictions in {write_s:.1f} s")
    print(f"labelling right after the writes: {fresh[0]:.2f} s ({fresh[1]} validated)")
    print(f"labelling after ANALYZE (baseline): {analysed[0]:.2f} s ({analysed[1]} validated)")
    print(f"fresh / analysed: {fresh[0] / analysed[0]:.2f}x (target <= 1.5x)")


def _label(engine, settings) -> tuple[float, int]:
    t = time.perf_counter()
    result = validate_outcomes(engine, settings, symbol=SYMBOL)
    return time.perf_counter() - t, result.validated


def lag(args) -> None:
    env_base = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSRV_")}
    with bench_database() as url:
        engine = make_engine(url)
        env = {
            **env_base,
            "LC_ALL": "C.UTF-8",
            "TRAINSRV_DATABASE_URL": url,
            "TRAINSRV_VALIDATION_INTERVAL_S": str(args.interval),
            "TRAINSRV_SCHEDULE_CHECK_INTERVAL_S": "1",
            "TRAINSRV_MIN_EPISODES_FOR_CNN_TRAINING": "0",
            "TRAINSRV_MIN_EXPERIENCES_FOR_RL_TRAINING": "0",
            "TRAINSRV_HANDLER_MODULES": "bench.loop_handlers",
            "PYTHONPATH": str(REPO_ROOT),
        }
        now = dt.datetime.now(UTC).replace(second=0, microsecond=0)
        # Candles up to a few minutes from now (within the clock-skew allowance for bars stamped by open time).
        first = now - dt.timedelta(hours=14)
        n = int((now - first).total_seconds() // 60) + args.duration_s // 60 + 2
        bars = market.simulate(market.MarketSpec(minutes=n, start=first))
        ingest_candles(engine, bars, SYMBOL, "1m", progress=False, max_clock_skew_s=10**6)
        package_id = _one_package(engine, now)
        trainer = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text("INSERT INTO jobs (kind, params) VALUES ('bench_train', CAST(:p AS jsonb))"),
                    {"p": json.dumps({"seconds": args.train_s})},
                )
            time.sleep(2)
            ends = _predict_every_second(engine, package_id, args.duration_s)
            time.sleep(120 + args.interval + 10)  # the last horizon ends 120 s after its prediction
            with engine.connect() as conn:
                train = conn.execute(
                    sa.text("SELECT started_at, finished_at FROM jobs WHERE kind = 'bench_train'")
                ).one()
                statuses = conn.execute(
                    sa.text("SELECT status, pending_reason, count(*) FROM outcomes GROUP BY 1, 2")
                ).all()
                kinds = conn.execute(sa.text("SELECT kind, state, count(*) FROM jobs GROUP BY 1, 2")).all()
                rows = conn.execute(
                    sa.text(
                        "SELECT p.predicted_at + make_interval(secs => p.horizon_s) AS horizon_end, o.validated_at "
                        "FROM predictions p LEFT JOIN outcomes o ON o.prediction_id = p.id AND o.status = 'validated'"
                    )
                ).all()
        finally:
            trainer.send_signal(signal.SIGTERM)
            trainer.wait(timeout=120)
        engine.dispose()
    train_end = train.finished_at or dt.datetime.now(UTC)
    during = [r for r in rows if train.started_at <= r.horizon_end <= train_end]
    lags = [(r.validated_at - r.horizon_end).total_seconds() for r in during if r.validated_at is not None]
    missing = len(during) - len(lags)
    print(f"machine: {machine()}")
    print(
        f"training job ran {(train_end - train.started_at).total_seconds():.1f} s; {ends} predictions, "
        f"{len(during)} with horizons ending while it ran ({missing} not labelled)"
    )
    print(f"outcomes: {statuses}; jobs: {kinds}")
    print(
        f"validation lag while training: p50 {percentile(lags, 50):.1f} s, p99 {percentile(lags, 99):.1f} s, "
        f"max {max(lags):.1f} s; target p99 <= interval + 5 = {args.interval + 5:g} s"
    )


def _one_package(engine, now) -> int:
    from app.client import Client
    from app.ingest.builder import package_from_candles

    with engine.connect() as conn:
        package = package_from_candles(conn, SYMBOL, now - dt.timedelta(minutes=1))
    with Client(engine) as client:
        return client.insert_package(package).package_id


def _predict_every_second(engine, package_id: int, duration_s: int) -> int:
    """One prediction per second, each with a 120 s horizon (two 1-minute bars; real time)."""
    from app.client import Client, Prediction

    n = 0
    with Client(engine) as client:
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            client.insert_prediction(
                Prediction(
                    model_kind="cnn",
                    model_version="bench",
                    action="long",
                    confidence=0.6,
                    horizon_s=120,
                    predicted_at=dt.datetime.now(UTC) - dt.timedelta(seconds=1),
                ),
                package_id=package_id,
            )
            n += 1
            time.sleep(1.0)
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="bench", required=True)
    f = sub.add_parser("freshness")
    f.add_argument("--predictions", type=int, default=2000)
    f.add_argument("--every-min", type=int, default=15)
    f.set_defaults(func=freshness)
    g = sub.add_parser("lag")
    g.add_argument("--interval", type=float, default=15.0)
    g.add_argument("--train-s", type=float, default=200.0)
    g.add_argument("--duration-s", type=int, default=60)
    g.set_defaults(func=lag)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
