"""The main job end to end, run the way a user runs trainsrv: ``trainsrv serve`` (its scheduler
on) left running while an orchestrator streams a market in accelerated time through the client.

Nothing is enqueued by hand while the loop runs: the scheduler validates outcomes, detects rapid
price changes and builds RL experiences every interval, and trains the CNN (profitable setups
only) and the RL agent (profit-weighted replay, full gradient capture) each time enough new data
has arrived. Once the market has been streamed and the loop has settled, the demo audits the
newest CNN session (exact replay from its stored gradients, integrity check) and summarises what
each stage did and when. Every succeeded session goes through the promotion gate (a follow-up
``promote_model`` job); the orchestrator predicts with the deployed models once there are any
(``app.demo.live``), so the summary ends with the deployed models and their live performance.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import sqlalchemy as sa
from tqdm import tqdm

from app.client import Client
from app.config import Settings, get_settings
from app.db import queries
from app.demo import live, stream
from app.demo.trainer_process import TrainerProcess, enqueue, wait_for
from app.errors import TrainsrvError
from app.registry import store
from app.stats import integration_stats

WARMUP = stream.WARMUP
LOOP_KINDS = ("validate_outcomes", "detect_events", "build_experiences", "train_cnn", "train_rl")
TRAIN_KINDS = ("train_cnn", "train_rl")
# Result fields that count what a run looked at, not what it did: not summed over runs.
PER_RUN_COUNTS = {"batches", "considered", "found", "velocity", "volatility_spike"}

ANALYST_SQL = [
    "-- the most profitable setups per symbol: the model's call and forecast beside the outcome\n"
    "SELECT symbol, predicted_at, action, confidence, predicted_move, price_return, actual_profit\n"
    "FROM v_profitable_setups WHERE profit_rank <= 10 ORDER BY symbol, profit_rank;",
    "-- win rate of premium (rapid-change) vs normal setups\n"
    "SELECT is_premium, count(*), avg(is_profitable::int) AS win_rate, avg(actual_profit) AS mean_profit\n"
    "FROM v_profitable_setups GROUP BY is_premium;",
    "-- sessions by out-of-sample value, and whether they beat the baseline\n"
    "SELECT session_id, model_kind, training_value, eval_accuracy, eval_baseline_accuracy, eval_total_profit,\n"
    "       beats_baseline FROM v_session_value ORDER BY training_value DESC NULLS LAST;",
    "-- what the CNN would re-train on next (profit_r > 0: profitable calls)\n"
    "SELECT episode_id, profit_r, training_priority FROM v_cnn_replay WHERE profit_r > 0\n"
    "ORDER BY training_priority DESC LIMIT 20;",
    "-- profitable vs unprofitable experiences in RL replay\nSELECT * FROM v_rl_replay_stats;",
    "-- what the loop did: jobs per stage\n"
    "SELECT kind, state, count(*), min(started_at), max(finished_at) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2;",
]


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    candles: Path | None = None
    symbol: str | None = None
    timeframe: str = "1m"
    days: float = 10.0
    every_min: int = 15
    horizon_s: int = 1800
    cnn_epochs: int = 3
    rl_steps: int = 150
    checkpoint_every: int = 25
    seed: int = 0
    progress: bool = True
    # Wall-clock seconds the market takes to stream (sets the accelerated clock's speed).
    stream_s: float = 60.0
    validation_interval_s: float = 3.0
    settle_timeout_s: float = 900.0
    # A learnable price cycle in the simulated market (percent; 0: the pure regime walk, in which no
    # model beats the baselines and the promotion gate refuses every candidate).
    cycle_pct: float = 1.0

    @property
    def market_symbol(self) -> str:
        return self.symbol or ("BTC-PERP" if self.candles else "SIM")

    @property
    def decisions(self) -> int:
        return int(self.days * 1440 // self.every_min) + 1


def loop_settings(opts: DemoOptions) -> dict[str, str]:
    """The trainer's environment: short intervals, thresholds for a few sessions per model, auto parameters."""
    common = {"capture": "full", "checkpoint_every": opts.checkpoint_every, "seed": opts.seed}
    return {
        "TRAINSRV_VALIDATION_INTERVAL_S": str(opts.validation_interval_s),
        "TRAINSRV_SCHEDULE_CHECK_INTERVAL_S": "1",
        # About three sessions of each model over the streamed market (profitable calls are ~40 %).
        "TRAINSRV_MIN_EPISODES_FOR_CNN_TRAINING": str(max(10, opts.decisions // 8)),
        "TRAINSRV_MIN_EXPERIENCES_FOR_RL_TRAINING": str(max(20, opts.decisions // 3)),
        "TRAINSRV_AUTO_CNN_PARAMS": json.dumps({**common, "epochs": opts.cnn_epochs}),
        "TRAINSRV_AUTO_RL_PARAMS": json.dumps({**common, "steps": opts.rl_steps}),
    }


def run_demo(engine: sa.Engine, url: str, opts: DemoOptions) -> dict:
    """Run the loop on a streamed market, audit the newest CNN session; returns the summary."""
    started = time.perf_counter()
    t0 = dt.datetime.now(dt.UTC)
    summary: dict = {"symbol": opts.market_symbol}
    spec, markets = _market(opts)
    log_dir = get_settings().data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"demo-trainer-{t0:%Y%m%dT%H%M%S}.log"
    with TrainerProcess(url, str(log_path), schedule=True, env=loop_settings(opts)) as trainer:
        summary["trainer_log"] = str(log_path)
        summary["orchestrator"] = _stream(engine, spec, markets, opts)
        stream_done = dt.datetime.now(dt.UTC)
        _settle(engine, trainer, stream_done, opts)
        _gates(engine, trainer)
        summary["stages"] = stage_summary(engine, t0)
        summary["jobs"] = _audit(engine, trainer, opts)
    summary["market"] = _market_span(engine, opts, markets)
    summary["sessions"] = _sessions(engine)
    with engine.connect() as conn:
        summary["stats"] = integration_stats(conn)
        summary["models"] = models_summary(conn)
    summary["analyst_sql"] = ANALYST_SQL
    summary["analyst_command"] = analyst_command(ANALYST_SQL[0])
    summary["elapsed_s"] = round(time.perf_counter() - started, 1)
    return summary


def analyst_command(sql: str) -> str:
    """A shell command that runs ``sql`` as the analyst role on this database, ready to paste: the program
    as it was invoked and the data dir when it is not the default (a database URL comes from the
    environment the user already has)."""
    invoked = Path(sys.argv[0]).name == "trainsrv"
    program = shlex.quote(sys.argv[0]) if invoked else f"{shlex.quote(sys.executable)} -m app.cli"
    settings = get_settings()
    prefix = ""
    if not settings.database_url and settings.data_dir != Settings().data_dir:
        prefix = f"TRAINSRV_DATA_DIR={shlex.quote(str(settings.data_dir.resolve()))} "
    query = " ".join(line for line in sql.splitlines() if not line.startswith("--"))
    return f"{prefix}{program} sql --analyst -c {shlex.quote(query)}"


def _market(opts: DemoOptions) -> tuple[stream.StreamSpec, dict | None]:
    hours = opts.days * 24
    if opts.candles is None:
        spec = stream.StreamSpec(
            symbols=(opts.market_symbol,),
            hours=hours,
            every_min=opts.every_min,
            horizon_s=opts.horizon_s,
            seed=opts.seed,
            speed=hours * 3600 / opts.stream_s,
            cycle_pct=opts.cycle_pct,
        )
        return spec, None
    columns = stream.read_candles_csv(opts.candles)
    stream.require_one_minute(columns, opts.candles, opts.timeframe)
    first = columns["timestamp"][0].astype("datetime64[s]").astype(dt.datetime).replace(tzinfo=dt.UTC)
    last = columns["timestamp"][-1].astype("datetime64[s]").astype(dt.datetime).replace(tzinfo=dt.UTC)
    available = (last - first - WARMUP).total_seconds() - opts.horizon_s
    if available <= 0:
        raise TrainsrvError(
            f"the market from {first} to {last} is too short for a demo: it needs more than "
            f"{WARMUP} of history plus one {opts.horizon_s} s horizon"
        )
    hours = min(hours, available / 3600)
    spec = stream.StreamSpec(
        symbols=(opts.market_symbol,),
        hours=hours,
        every_min=opts.every_min,
        horizon_s=opts.horizon_s,
        seed=opts.seed,
        start=first,
        speed=hours * 3600 / opts.stream_s,
    )
    return spec, {opts.market_symbol: columns}


def _stream(engine: sa.Engine, spec: stream.StreamSpec, markets: dict | None, opts: DemoOptions) -> dict:
    total = int(spec.hours * 60 // spec.every_min) + 1
    with tqdm(total=total, desc="orchestrator: streaming", unit="pkg", disable=not opts.progress) as bar:
        with Client(engine) as client:
            # The stand-in rules until a model of the kind is promoted, then the deployed model's calls.
            source = live.DeployedModels(client, spec.horizon_s, stream.rule_models(spec.seed + 11, spec.horizon_s))
            streamer = stream.Streamer(
                engine, spec, source, on_decision=lambda symbol, ts: bar.update(1), markets=markets
            )
            return {**streamer.run(), "model_switches": source.switches}


def _settle(engine: sa.Engine, trainer: TrainerProcess, since: dt.datetime, opts: DemoOptions) -> None:
    """Wait until the loop has caught up with the streamed market: validation and experience runs
    that started after the stream ended, and no training queued or running after them."""
    deadline = time.monotonic() + opts.settle_timeout_s
    settled_checks = 0
    with tqdm(desc="trainer: settling", unit=" checks", disable=not opts.progress) as bar:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                state = conn.execute(queries.get("demo.loop_state"), {"since": since}).mappings().one()
            if state["failed"]:
                raise TrainsrvError(f"{state['failed']} job(s) failed; see `trainsrv jobs list --state failed`")
            # Twice in a row, a scheduler tick apart: a training job the last run made due is seen.
            settled_checks = settled_checks + 1 if state["settled"] else 0
            if settled_checks >= 3:
                return
            if trainer.proc.poll() is not None:
                raise TrainsrvError(f"the trainer process exited with code {trainer.proc.returncode}; see its log")
            bar.update(1)
            time.sleep(1.0)
    raise TrainsrvError(f"the loop did not settle within {opts.settle_timeout_s:g} s")


def _gates(engine: sa.Engine, trainer: TrainerProcess) -> None:
    """Wait for the promotion gates the last sessions enqueued."""
    with engine.connect() as conn:
        ids = list(conn.execute(queries.get("registry.unfinished_gates")).scalars())
    if ids:
        wait_for(engine, ids, trainer)


def models_summary(conn: sa.Connection) -> dict:
    """The registry after the loop: deployed models, decisions, refusal reasons and live performance."""
    deployed = [r for r in store.models_list(conn, limit=1000) if r["is_deployed"]]
    return {
        "deployed": deployed,
        "decisions": [dict(r) for r in conn.execute(queries.get("registry.decision_counts")).mappings()],
        "refusal_reasons": [dict(r) for r in conn.execute(queries.get("registry.refusal_reasons")).mappings()],
        "live": store.live_performance(conn),
    }


def _audit(engine: sa.Engine, trainer: TrainerProcess, opts: DemoOptions) -> dict:
    """Exact replay and integrity check of the newest CNN session (the demo's own check, not a loop stage)."""
    with engine.connect() as conn:
        session = conn.execute(queries.get("demo.newest_session"), {"model_kind": "cnn"}).scalar()
    if session is None:
        raise TrainsrvError("the loop trained no CNN session (too few profitable episodes in this market?)")
    ids = {
        "replay_session": enqueue(engine, "replay_session", session_id=session, verify=True),
        "verify_integrity": enqueue(engine, "verify_integrity", session_id=session),
    }
    with tqdm(desc="audit: replay and verify", disable=not opts.progress):
        done = wait_for(engine, list(ids.values()), trainer)
    return {
        kind: {
            "job_id": job["id"],
            "attempts": job["attempts"],
            "elapsed_s": round((job["finished_at"] - job["started_at"]).total_seconds(), 2),
            "result": job["result"],
        }
        for kind, job in zip(ids, done)
    }


def stage_summary(engine: sa.Engine, t0: dt.datetime) -> list[dict]:
    """Per loop stage: runs, when (seconds after ``t0``), time busy, and the sums of what its jobs did."""
    with engine.connect() as conn:
        rows = conn.execute(queries.get("demo.loop_jobs"), {"kinds": list(LOOP_KINDS)}).mappings().all()
    stages: dict[str, dict] = {}
    for r in rows:
        s = stages.setdefault(
            r["kind"],
            {
                "stage": r["kind"],
                "runs": 0,
                "first_s": None,
                "last_s": None,
                "busy_s": 0.0,
                "did": defaultdict(int),
                "sessions": [],
            },
        )
        s["runs"] += 1
        start, end = (r["started_at"] - t0).total_seconds(), (r["finished_at"] - t0).total_seconds()
        s["first_s"] = round(start if s["first_s"] is None else min(s["first_s"], start), 1)
        s["last_s"] = round(end if s["last_s"] is None else max(s["last_s"], end), 1)
        s["busy_s"] = round(s["busy_s"] + end - start, 2)
        result = r["result"] or {}
        if r["kind"] in TRAIN_KINDS:
            s["sessions"].append(result.get("session_id"))
            s["did"]["steps"] += int(result.get("steps") or 0)
        else:
            for key, value in result.items():
                if isinstance(value, int) and not isinstance(value, bool) and key not in PER_RUN_COUNTS:
                    s["did"][key] += value
    for s in stages.values():
        s["did"] = dict(s["did"])
    return [stages[k] for k in LOOP_KINDS if k in stages]


def _market_span(engine: sa.Engine, opts: DemoOptions, markets: dict | None) -> dict:
    with engine.connect() as conn:
        span = conn.execute(queries.get("demo.market_range"), {"symbol": opts.market_symbol}).mappings().one()
    return {
        "source": str(opts.candles) if opts.candles else "simulated",
        "bars": span["bars"],
        "first_ts": span["first_ts"],
        "last_ts": span["last_ts"],
    }


def _sessions(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(queries.get("demo.loop_sessions"))]
        return [dict(r) for r in conn.execute(queries.get("demo.session_values"), {"ids": ids}).mappings()]
