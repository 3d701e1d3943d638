"""The main job end to end: market -> orchestrator -> validation and events -> training through
the job queue (CNN and RL, full gradient capture) -> exact replay of a stored session -> summary.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from tqdm import tqdm

from app.config import Settings, get_settings
from app.db import queries
from app.demo import market, orchestrator
from app.demo.trainer_process import TrainerProcess, enqueue, wait_for
from app.errors import TrainsrvError
from app.ingest.candles import ingest_candles
from app.stats import integration_stats

# Packages need 12 hours of history for their 1-hour window.
WARMUP = dt.timedelta(hours=13)

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
    "-- what the CNN would re-train on next\n"
    "SELECT episode_id, training_priority FROM v_cnn_replay ORDER BY training_priority DESC LIMIT 20;",
    "-- profitable vs unprofitable experiences in RL replay\n"
    "SELECT * FROM v_rl_replay_stats;",
]


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    candles: Path | None = None
    symbol: str | None = None
    days: float = 10.0
    every_min: int = 15
    horizon_s: int = 1800
    cnn_epochs: int = 3
    cnn_min_profitability: float = 0.55
    rl_steps: int = 150
    checkpoint_every: int = 25
    seed: int = 0
    progress: bool = True

    @property
    def market_symbol(self) -> str:
        return self.symbol or ("BTC-PERP" if self.candles else "SIM")


def run_demo(engine: sa.Engine, url: str, opts: DemoOptions) -> dict:
    """Run every stage; returns the machine-readable summary."""
    started = time.perf_counter()
    summary: dict = {"symbol": opts.market_symbol}
    summary["market"] = _load_market(engine, opts)
    first, last = summary["market"]["first_ts"], summary["market"]["last_ts"]
    start = first + WARMUP
    end = min(last - dt.timedelta(seconds=opts.horizon_s), start + dt.timedelta(days=opts.days))
    if end <= start:
        raise TrainsrvError(f"the market from {first} to {last} is too short for a demo: it needs more than "
                            f"{WARMUP} of history plus one {opts.horizon_s} s horizon")
    summary["orchestrator"] = _record(engine, opts, start, end)
    log_dir = get_settings().data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"demo-trainer-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}.log"
    with TrainerProcess(url, str(log_path)) as trainer:
        summary["trainer_log"] = str(log_path)
        summary["jobs"] = _train(engine, opts, trainer)
    summary["sessions"] = _sessions(engine, summary["jobs"])
    with engine.connect() as conn:
        summary["stats"] = integration_stats(conn)
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


def _load_market(engine: sa.Engine, opts: DemoOptions) -> dict:
    if opts.candles is not None:
        source = opts.candles
    else:
        minutes = int((opts.days + 2) * 1440 + WARMUP.total_seconds() / 60)
        source = market.simulate(market.MarketSpec(minutes=minutes, seed=opts.seed + 7))
    report = ingest_candles(engine, source, opts.market_symbol, "1m", progress=opts.progress)
    with engine.connect() as conn:
        span = conn.execute(queries.get("demo.market_range"), {"symbol": opts.market_symbol}).mappings().one()
    if span["bars"] == 0:
        raise TrainsrvError(f"no 1-minute candles for {opts.market_symbol} were loaded")
    return {"source": str(opts.candles) if opts.candles else "simulated", "loaded": report.loaded,
            "duplicates": report.duplicates, "rejected": report.rejected, "bars": span["bars"],
            "first_ts": span["first_ts"], "last_ts": span["last_ts"]}


def _record(engine: sa.Engine, opts: DemoOptions, start: dt.datetime, end: dt.datetime) -> dict:
    spec = orchestrator.OrchestratorSpec(opts.market_symbol, start, end, opts.every_min, opts.horizon_s,
                                         seed=opts.seed + 11)
    total = sum(1 for _ in orchestrator.decision_times(spec))
    with tqdm(total=total, desc="orchestrator: packages", unit="pkg", disable=not opts.progress) as bar:
        return orchestrator.run(engine, spec, progress=bar.update)


def _train(engine: sa.Engine, opts: DemoOptions, trainer: TrainerProcess) -> dict:
    s = opts.market_symbol
    jobs: dict[str, dict] = {}
    _stage(engine, trainer, jobs, opts, "validate and detect", {
        "validate_outcomes": {"symbol": s, "force": True}, "detect_events": {"symbol": s}})
    _stage(engine, trainer, jobs, opts, "build experiences", {"build_experiences": {"symbol": s}})
    common = {"symbol": s, "capture": "full", "checkpoint_every": opts.checkpoint_every, "seed": opts.seed}
    _stage(engine, trainer, jobs, opts, "train", {
        "train_cnn": {**common, "epochs": opts.cnn_epochs, "min_profitability": opts.cnn_min_profitability},
        "train_rl": {**common, "steps": opts.rl_steps}})
    cnn_session = jobs["train_cnn"]["result"]["session_id"]
    _stage(engine, trainer, jobs, opts, "replay and verify", {
        "replay_session": {"session_id": cnn_session, "verify": True},
        "verify_integrity": {"session_id": cnn_session}})
    return jobs


def _stage(engine, trainer, jobs: dict, opts: DemoOptions, name: str, kinds: dict[str, dict]) -> None:
    ids = {kind: enqueue(engine, kind, **params) for kind, params in kinds.items()}
    with tqdm(desc=f"trainer: {name}", unit=" steps", disable=not opts.progress) as bar:
        def poll():
            with engine.connect() as conn:
                steps = sum(conn.execute(queries.get("demo.steps_of_job"), {"job_id": i}).scalar() for i in ids.values())
            bar.update(steps - bar.n)
        done = wait_for(engine, list(ids.values()), trainer, on_poll=poll)
        poll()
    for kind, job in zip(ids, done):
        elapsed = (job["finished_at"] - job["started_at"]).total_seconds()
        jobs[kind] = {"job_id": job["id"], "attempts": job["attempts"], "elapsed_s": round(elapsed, 2),
                      "result": job["result"]}


def _sessions(engine: sa.Engine, jobs: dict) -> list[dict]:
    ids = [j["result"]["session_id"] for k, j in jobs.items() if k in ("train_cnn", "train_rl")]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(queries.get("demo.session_values"), {"ids": ids}).mappings()]
