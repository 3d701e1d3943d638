"""The walk-forward experiment: time advances in rounds through the production loop, one lane per
(family, arm, seed), each in its own database (``app.experiments.lanes``).

In every lane, window by window:

1. the candles that closed by the window's end are stored (``ingest_candles``) — later bars do not exist
   yet for anything that runs in this round;
2. the orchestrator stores each decision's package and its calls through ``app.client.Client``: the
   family's calls come from the model deployed at that time (``Client.deployed_model``), or the demo's
   reference rule (momentum for the CNN, reversion for the RL agent) before any model is deployed;
3. the loop's jobs run through the job queue and a worker: ``validate_outcomes`` (only horizons whose
   bars are stored can be labelled), ``detect_events``, ``build_experiences``;
4. except after the last window, a ``train_cnn`` / ``train_rl`` job with the arm's parameters trains a
   model (warm-started from the deployed one), and its ``promote_model`` job lets the promotion gate
   decide whether it is deployed for the next window.

At the end, every round's model is run on the packages of the *next* window, which neither it nor any
model of its lineage trained on (checked: ``trained_through`` against the window start, and the lane's
``v_leakage_audit``), and scored against that window's outcomes. The lane's live calls and the no-trade
and always-long baselines are scored on the same windows. Rows go to ``experiment_results``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable

import numpy as np
import sqlalchemy as sa

from app.client import Client
from app.config import Settings, get_settings
from app.db import queries
from app.demo import orchestrator
from app.experiments import lanes, stats
from app.experiments import series as series_mod
from app.ingest.candles import ingest_candles
from app.jobs import queue

log = logging.getLogger(__name__)

SMALL_CNN = {"channels": 8, "hidden": 16, "kernel": 3, "dropout": 0.1}
SMALL_RL = {"hidden": 32}
CNN_ARMS = {
    # The seed's rule: train on profitable calls only (profit after costs > 0, v_cnn_replay's profit_r > 0),
    # with the hold examples kept (without them the model never learns to stand aside).
    "profitable": {"min_profitability": 0.0, "min_profit_r": 0.0, "keep_holds": True, "sampling": "uniform"},
    # Every episode, each seen once per epoch: the uniform arm the others are compared with.
    "all": {"min_profitability": 0.0, "min_profit_r": None, "keep_holds": True, "sampling": "uniform"},
    # Every episode, batches drawn in proportion to v_cnn_replay's training_priority.
    "priority": {"min_profitability": 0.0, "min_profit_r": None, "keep_holds": True, "sampling": "priority"},
}
RL_ARMS = {
    # Profit-weighted prioritized replay as configured (alpha, profit boost, profitable share: docs/rl.md).
    "per": {"replay": None, "params": {}},
    # Uniform replay: priorities to the power 0, no profit boost, no profitable-only part of the batch.
    "uniform": {"replay": {"alpha": 0.0, "profit_boost": 1.0}, "params": {"profitable_share": 0.0}},
}


@dataclasses.dataclass(frozen=True)
class Options:
    every_min: int = 15
    horizon_s: int = 1800
    warmup_days: float = 7.0
    rounds: int = 6
    seeds: int = 3
    cnn_arms: tuple[str, ...] = tuple(CNN_ARMS)
    rl_arms: tuple[str, ...] = tuple(RL_ARMS)
    epochs: int = 3
    batch_size: int = 64
    rl_steps: int = 120
    eval_fraction: float = 0.15
    keep_lanes: bool = False

    def validate(self) -> None:
        for name in ("every_min", "horizon_s", "rounds", "seeds", "epochs", "batch_size", "rl_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        unknown = [a for a in self.cnn_arms if a not in CNN_ARMS] + [a for a in self.rl_arms if a not in RL_ARMS]
        if unknown:
            raise ValueError(f"unknown arms {unknown}: CNN {list(CNN_ARMS)}, RL {list(RL_ARMS)}")
        if self.warmup_days <= 0:
            raise ValueError("warmup_days must be > 0")


@dataclasses.dataclass(frozen=True)
class Lane:
    family: str
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.family}_{self.arm}_{self.seed}"


@dataclasses.dataclass(frozen=True)
class Window:
    index: int
    lo: int  # decisions [lo, hi)
    hi: int
    start: dt.datetime  # first decision time
    end: dt.datetime  # when the window's last horizon has passed: its candles are stored by then


def windows(times: list[dt.datetime], opts: Options) -> list[Window]:
    """The warm-up window (reference rule) and ``rounds`` equal windows after it."""
    warm_end = times[0] + dt.timedelta(days=opts.warmup_days)
    w0 = next((i for i, t in enumerate(times) if t >= warm_end), len(times))
    rest = len(times) - w0
    if w0 < 10 or rest < 10 * opts.rounds:
        raise ValueError(
            f"{len(times)} decisions: too few for a {opts.warmup_days}-day warm-up and {opts.rounds} "
            "rounds (at least 10 decisions each); use a longer series or fewer rounds"
        )
    bounds = [0, w0] + [w0 + rest * k // opts.rounds for k in range(1, opts.rounds + 1)]
    out = []
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        out.append(Window(i, lo, hi, times[lo], times[hi - 1] + dt.timedelta(minutes=opts.every_min)))
    return out


class Progress:
    """One line on stderr per lane round, with the elapsed time and an estimate of what is left."""

    def __init__(self, steps: int, stream=None):
        self.total, self.done, self.t0 = steps, 0, time.monotonic()
        self.stream = stream or sys.stderr

    def step(self, text: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.t0
        left = elapsed / self.done * (self.total - self.done)
        print(
            f"[{self.done}/{self.total} {_mmss(elapsed)} elapsed, ~{_mmss(left)} left] {text}",
            file=self.stream,
            flush=True,
        )


def _mmss(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s"


def run(
    main: sa.Engine,
    series: series_mod.Series,
    opts: Options,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
    on_lane: Callable[[Lane, list[dict]], None] = lambda lane, rows: None,
) -> int:
    """Run the experiment; returns its id in ``experiments`` (results in ``experiment_results``)."""
    opts.validate()
    settings = settings or get_settings()
    settings = dataclasses.replace(settings, device="cpu", enable_background_validation=True)
    times = series_mod.decision_times(series, opts.every_min, opts.horizon_s)
    plan = windows(times, opts)
    lanes_ = [Lane("cnn", a, s) for a in opts.cnn_arms for s in range(opts.seeds)]
    lanes_ += [Lane("rl", a, s) for a in opts.rl_arms for s in range(opts.seeds)]
    config = {
        **dataclasses.asdict(opts),
        "decisions": len(times),
        "bars": int(len(series.columns["timestamp"])),
        "windows": [{"start": w.start.isoformat(), "end": w.end.isoformat(), "decisions": w.hi - w.lo} for w in plan],
        "fee_rate": settings.fee_rate,
        "slippage_rate": settings.slippage_rate,
        "lanes": [lane.name for lane in lanes_],
        "machine": _machine(),
    }
    with main.begin() as conn:
        exp_id = conn.execute(
            queries.get("experiments.insert"),
            {"series": series.name, "symbol": series.symbol, "config": json.dumps(config, default=str)},
        ).scalar_one()
    progress = progress or Progress(1 + len(lanes_) * len(plan))
    tpl_name = lanes.database_name(main, exp_id, "tpl")
    try:
        packages = _packages(main, exp_id, tpl_name, series, times)
        progress.step(f"experiment {exp_id}: {len(times)} decisions, {len(plan)} windows, packages built")
        for lane in lanes_:
            rows = _run_lane(main, exp_id, tpl_name, lane, series, packages, plan, opts, settings, progress)
            with main.begin() as conn:
                for row in rows:
                    conn.execute(queries.get("experiments.insert_result"), {"experiment_id": exp_id, **row})
            on_lane(lane, rows)
        summary = summarise(main, exp_id)
        with main.begin() as conn:
            conn.execute(queries.get("experiments.finish"), {"id": exp_id, "summary": json.dumps(summary, default=str)})
    except BaseException as exc:
        with main.begin() as conn:
            conn.execute(queries.get("experiments.fail"), {"id": exp_id, "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        lanes.drop(main, tpl_name)
    return exp_id


def results(main: sa.Engine, exp_id: int) -> list[dict]:
    with main.connect() as conn:
        return [dict(r) for r in conn.execute(queries.get("experiments.results"), {"id": exp_id}).mappings()]


def summarise(main: sa.Engine, exp_id: int) -> dict:
    rows = results(main, exp_id)
    return {
        "arms": stats.arm_table(rows),
        "comparisons": stats.comparisons(rows),
        "live_comparisons": stats.comparisons(rows, source="live"),
        "leakage_rows": sum(r["leakage_rows"] for r in rows if r["source"] == "model"),
    }


def _machine() -> dict:
    import os

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpus": os.cpu_count(), "loadavg_at_start": load}


def _packages(main: sa.Engine, exp_id: int, tpl_name: str, series: series_mod.Series, times) -> list:
    """Build the packages once in a scratch copy of the migrated template (then dropped)."""
    tpl = lanes.create_template(main, tpl_name)
    tpl.dispose()
    scratch_name = lanes.database_name(main, exp_id, "packages")
    scratch = lanes.clone(main, tpl_name, scratch_name)
    try:
        return series_mod.build_packages(scratch, series, times)
    finally:
        scratch.dispose()
        lanes.drop(main, scratch_name)


def _run_lane(
    main,
    exp_id,
    tpl_name,
    lane: Lane,
    series,
    packages,
    plan: list[Window],
    opts: Options,
    settings: Settings,
    progress: Progress,
) -> list[dict]:
    name = lanes.database_name(main, exp_id, lane.name)
    engine = lanes.clone(main, tpl_name, name)
    try:
        return LaneRun(engine, lane, series, packages, plan, opts, settings, progress).run()
    finally:
        engine.dispose()
        if not opts.keep_lanes:
            lanes.drop(main, name)


class LaneRun:
    """One lane's walk through the windows (see the module docstring)."""

    def __init__(self, engine, lane: Lane, series, packages, plan, opts: Options, settings: Settings, progress):
        self.engine, self.lane, self.series, self.packages = engine, lane, series, packages
        self.plan, self.opts, self.settings, self.progress = plan, opts, settings, progress
        self.rng = np.random.default_rng(1_000 + lane.seed)
        self.clock = series.first - dt.timedelta(minutes=1)
        self.sessions: dict[int, dict] = {}  # window index -> result of the training job after it
        self.package_ids: list[int | None] = [None] * len(packages)
        self.cost = 2 * (settings.fee_rate + settings.slippage_rate)

    def run(self) -> list[dict]:
        from app.jobs.worker import Worker

        self.worker = Worker(self.engine, self.settings, worker_id=f"experiment:{self.lane.name}", schedule=False)
        if self.lane.family == "rl" and RL_ARMS[self.lane.arm]["replay"]:
            from app.rl_replay.buffer import ProfitWeightedExperienceBuffer

            with ProfitWeightedExperienceBuffer(self.engine, settings=self.settings) as buffer:
                buffer.configure(**RL_ARMS[self.lane.arm]["replay"])
        with Client(self.engine, self.settings) as client:
            for w in self.plan:
                t0 = time.monotonic()
                self._release(w.end)
                self._decide(client, w)
                self._jobs(
                    [
                        ("validate_outcomes", {"symbol": self.series.symbol, "force": True}),
                        ("detect_events", {"symbol": self.series.symbol}),
                        ("build_experiences", {"symbol": self.series.symbol}),
                    ]
                )
                trained = ""
                if w.index < len(self.plan) - 1:
                    self.sessions[w.index] = self._train()
                    s = self.sessions[w.index]
                    trained = (
                        f", trained session {s.get('session_id')}"
                        if s.get("session_id")
                        else f", no model: {s.get('error', '?')[:120]}"
                    )
                self.progress.step(
                    f"{self.lane.family}/{self.lane.arm} seed {self.lane.seed}: window {w.index} "
                    f"({w.hi - w.lo} decisions){trained} in {time.monotonic() - t0:.1f} s"
                )
        self._release(self.series.end + dt.timedelta(minutes=1))
        self._jobs([("validate_outcomes", {"symbol": self.series.symbol, "force": True})])
        return self._score()

    # -- the market and the orchestrator --------------------------------------------------------

    def _release(self, clock: dt.datetime) -> None:
        chunk = self.series.between(self.clock, clock)
        if len(chunk["timestamp"]):
            ingest_candles(self.engine, chunk, self.series.symbol, "1m", progress=False)
        self.clock = max(self.clock, clock)

    def _decide(self, client: Client, w: Window) -> None:
        pkgs = self.packages[w.lo : w.hi]
        stored = client.insert_packages(pkgs)
        model = client.deployed_model(self.lane.family, self.series.symbol)
        model_calls = model.calls(model.inputs(pkgs)) if model is not None else None
        for i, (pkg, res) in enumerate(zip(pkgs, stored)):
            self.package_ids[w.lo + i] = res.package_id
            for pred in orchestrator.calls(pkg, self.opts.horizon_s, self.rng):
                if pred.model_kind == self.lane.family and model_calls is not None:
                    pred = dataclasses.replace(
                        pred, model_version=model.version, action=model_calls[i], confidence=0.5, predicted_move=None
                    )
                client.insert_prediction(pred, package_id=res.package_id)

    # -- the loop's jobs ----------------------------------------------------------------------------

    def _jobs(self, jobs: list[tuple[str, dict]]) -> list[dict]:
        with self.engine.begin() as conn:
            ids = [queue.enqueue(conn, kind, params).id for kind, params in jobs]
        self.worker.run(once=True)
        with self.engine.connect() as conn:
            return [queue.get(conn, i) for i in ids]

    def _train(self) -> dict:
        kind, params = self._training_job()
        job = self._jobs([(kind, params)])[0]
        if job["state"] != "succeeded":
            return {"error": (job.get("last_error") or job["state"]).splitlines()[0]}
        return job["result"]

    def _training_job(self) -> tuple[str, dict]:
        common = {
            "symbol": self.series.symbol,
            "seed": self.lane.seed,
            "capture": "none",
            "device": "cpu",
            "checkpoint_every": 1_000_000,
            "eval_fraction": self.opts.eval_fraction,
            "init": "deployed",
            "promote": True,
        }
        if self.lane.family == "cnn":
            arm = {k: v for k, v in CNN_ARMS[self.lane.arm].items()}
            return "train_cnn", {
                **common,
                **arm,
                "epochs": self.opts.epochs,
                "batch_size": self.opts.batch_size,
                "model_config": json.dumps(SMALL_CNN),
            }
        return "train_rl", {
            **common,
            **RL_ARMS[self.lane.arm]["params"],
            "steps": self.opts.rl_steps,
            "batch_size": self.opts.batch_size,
            "model_config": json.dumps(SMALL_RL),
        }

    # -- scoring ------------------------------------------------------------------------------------

    def _score(self) -> list[dict]:
        from app.registry import loader

        with self.engine.connect() as conn:
            leakage = conn.execute(queries.get("experiments.leakage_count")).scalar_one()
        rows = []
        for w in self.plan[1:]:
            ids = self.package_ids[w.lo : w.hi]
            with self.engine.connect() as conn:
                truth = {
                    r.package_id: r
                    for r in conn.execute(
                        queries.get("experiments.window_truth"), {"ids": ids, "model_kind": self.lane.family}
                    )
                }
                live = {
                    r.package_id: r.action
                    for r in conn.execute(
                        queries.get("experiments.window_calls"), {"ids": ids, "model_kind": self.lane.family}
                    )
                }
            keep = [i for i, pid in enumerate(ids) if pid in truth]
            rets = [truth[ids[i]].price_return for i in keep]
            optimal = [truth[ids[i]].optimal_action for i in keep]
            base = {"window_from": w.start, "window_to": w.end, "round": w.index, "leakage_rows": leakage}
            rows.append(
                {**base, "source": "no_trade", **stats.window_metrics(["hold"] * len(keep), rets, optimal, self.cost)}
            )
            rows.append(
                {
                    **base,
                    "source": "always_long",
                    **stats.window_metrics(["long"] * len(keep), rets, optimal, self.cost),
                }
            )
            rows.append(
                {
                    **base,
                    "source": "live",
                    **stats.window_metrics([live[ids[i]] for i in keep], rets, optimal, self.cost),
                }
            )
            trained = self.sessions.get(w.index - 1, {})
            sid = trained.get("session_id")
            if sid is None:
                continue
            model = loader.load(self.engine, sid)
            pkgs = [self.packages[w.lo + i] for i in keep]
            calls = model.calls(model.inputs(pkgs)) if pkgs else []
            with self.engine.connect() as conn:
                info = conn.execute(queries.get("experiments.session_info"), {"id": sid, "slice_start": w.start}).one()
            rows.append(
                {
                    **base,
                    "source": "model",
                    "session_id": sid,
                    "train_episodes": info.train_episodes,
                    "promoted": info.promoted,
                    "leakage_rows": leakage + info.contaminated,
                    **stats.window_metrics(calls, rets, optimal, self.cost),
                }
            )
        for row in rows:
            row.setdefault("session_id", None)
            row.setdefault("train_episodes", None)
            row.setdefault("promoted", None)
            row.update(family=self.lane.family, arm=self.lane.arm, seed=self.lane.seed)
        return rows
