"""Train a CNN on a symbol's most profitable episodes (the seed's train_on_profitable_episodes).

``train_cnn`` reads ``v_cnn_replay``, splits it chronologically (``app.trainer.episodes``),
trains the model by import path with full step / gradient / checkpoint recording
(``app.recording.session``), evaluates on the later slice and stores the result on the session.
``resume_cnn`` continues a failed, interrupted or killed session from its last checkpoint.

Everything a resume or replay needs is in ``training_sessions.config``: the model path and
config, input spec, optimizer spec (with its schedule length), loss weights, batch size, seed
and the exact episode ids. Batch ``s`` is a pure function of (seed, step): epoch ``e`` visits
the training episodes in ``randperm(n)`` seeded with ``seed * 1_000_003 + e``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math

import sqlalchemy as sa
import torch

from app.config import Settings, get_settings
from app.nets import inputs, interface
from app.nets.losses import LossWeights, cnn_loss
from app.recording import checkpoints, sessions
from app.recording.convergence import ConvergenceTracker
from app.recording.hooks import Hooks, check, resolve_device
from app.recording.optim import OptimizerSpec
from app.recording.policy import CapturePolicy, WriterOptions
from app.recording.session import SessionRecorder
from app.recording.step import Batch, train_step
from app.registry import lineage, warm
from app.trainer import episodes as episodes_mod
from app.trainer import evaluate

log = logging.getLogger(__name__)

MODEL_KIND = "cnn"
SAMPLING = ("uniform", "priority")


@dataclasses.dataclass
class CnnTrainOptions:
    """What ``trainsrv train cnn`` accepts (see docs/training.md)."""

    symbol: str
    min_profitability: float = 0.7
    # Replay threshold on v_cnn_replay's profit_r scale (0 = break-even): episodes with profit_r above it.
    min_profit_r: float | None = None
    # None: every candidate; a number keeps the highest-priority ones (with a tight budget that ranking, not
    # the thresholds, decides the set: premium, score ~ 1 episodes come first whatever the threshold).
    max_episodes: int | None = None
    # Candidates whose optimal action was to stay out are kept whatever the thresholds (a hold earns
    # nothing, so a profit filter alone would leave the model no example of standing aside).
    keep_holds: bool = True
    # uniform: every epoch visits each episode once; priority: each batch is drawn with replacement in
    # proportion to v_cnn_replay's training_priority at selection time.
    sampling: str = "uniform"
    epochs: int = 10
    batch_size: int = 32
    eval_fraction: float = 0.2
    model: str = interface.REFERENCE
    model_config: dict = dataclasses.field(default_factory=dict)
    optimizer: OptimizerSpec = dataclasses.field(default_factory=OptimizerSpec)
    loss_weights: LossWeights = dataclasses.field(default_factory=LossWeights)
    capture: CapturePolicy = dataclasses.field(default_factory=CapturePolicy)
    checkpoint_every: int = 50
    patience: int = 100
    seed: int = 0
    device: str = "auto"
    init: str = "deployed"  # deployed | session:ID | scratch (app/registry/warm.py)

    def validate(self) -> None:
        check("symbol", bool(self.symbol and self.symbol.strip()), "must be a non-empty string")
        warm.parse(self.init)
        check("min_profitability", 0 <= self.min_profitability <= 1, "must be in [0, 1]")
        check("min_profit_r", self.min_profit_r is None or math.isfinite(self.min_profit_r), "must be finite")
        check("max_episodes", self.max_episodes is None or self.max_episodes >= 1, "must be >= 1")
        check("sampling", self.sampling in SAMPLING, f"must be one of {', '.join(SAMPLING)}")
        check("epochs", self.epochs >= 1, "must be >= 1")
        check("batch_size", self.batch_size >= 1, "must be >= 1")
        check("eval_fraction", 0 < self.eval_fraction < 1, "must be in (0, 1)")
        check("checkpoint_every", self.checkpoint_every >= 1, "must be >= 1")
        check("patience", self.patience >= 1, "must be >= 1")


@dataclasses.dataclass
class _Data:
    ids: list[int]
    inputs: torch.Tensor
    action: torch.Tensor
    move_pct: torch.Tensor
    profitability: torch.Tensor
    actual_profit: torch.Tensor
    episodes: list[episodes_mod.Episode]


@dataclasses.dataclass
class _Run:
    config: dict
    recorder: SessionRecorder
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    spec: OptimizerSpec
    train: _Data
    evaluation: _Data
    tracker: ConvergenceTracker
    total_steps: int
    steps_per_epoch: int
    last_checkpoint: int
    cost: float


def train_cnn(
    engine: sa.Engine,
    opts: CnnTrainOptions,
    *,
    job_id: int | None = None,
    hooks: Hooks | None = None,
    settings: Settings | None = None,
    writer_options: WriterOptions | None = None,
) -> dict:
    """Train a new session; returns its summary (session id, steps, metrics, training value)."""
    opts.validate()
    settings = settings or get_settings()
    device = resolve_device(opts.device if opts.device != "auto" else settings.device)
    with engine.connect() as conn:
        split = episodes_mod.split(
            conn,
            opts.symbol,
            min_profitability=opts.min_profitability,
            min_profit_r=opts.min_profit_r,
            max_episodes=opts.max_episodes,
            eval_fraction=opts.eval_fraction,
            keep_holds=opts.keep_holds,
        )
        split, packages = _decodable(conn, split)
        spec_in = inputs.infer_spec(packages[split.train[0].package_id], settings)
        train = _load(conn, split.train, spec_in, packages)
        evaluation = _load(conn, split.evaluation, spec_in, packages)
        config = _config(opts, opts.optimizer, spec_in, split, settings, device)
        start = warm.resolve(
            conn,
            opts.init,
            model_kind=MODEL_KIND,
            symbol=opts.symbol,
            architecture={k: config[k] for k in ("model", "model_config", "input_spec")},
        )
    steps_per_epoch = math.ceil(len(train.ids) / opts.batch_size)
    total = steps_per_epoch * opts.epochs
    spec = dataclasses.replace(opts.optimizer, total_steps=total)
    config.update(optimizer=spec.to_config(), init=start.to_config())
    torch.manual_seed(opts.seed)
    model = interface.build_model(opts.model, spec_in, opts.model_config).to(device)
    warm.apply(model, start)
    optimizer = spec.build(model.parameters())
    recorder = warm.record_session(engine, MODEL_KIND, opts, config, device, start, job_id, writer_options)
    run = _Run(
        config,
        recorder,
        model,
        optimizer,
        spec,
        train,
        evaluation,
        ConvergenceTracker(patience=opts.patience),
        total,
        steps_per_epoch,
        0,
        config["cost"],
    )
    return recorder.guarded(lambda: _train_from(run, 1, hooks or Hooks(), start=True))


def resume_cnn(
    engine: sa.Engine, session_id: int, *, hooks: Hooks | None = None, writer_options: WriterOptions | None = None
) -> dict:
    """Continue ``session_id`` from its last checkpoint (see SessionRecorder.resume)."""
    recorder, ckpt = SessionRecorder.resume(engine, session_id, writer_options)
    try:
        config = sessions.config_of(engine, session_id)
        spec_in = interface.InputSpec(**config["input_spec"])
        with engine.connect() as conn:
            train = _load(conn, episodes_mod.by_ids(conn, config["train_episode_ids"]), spec_in)
            evaluation = _load(conn, episodes_mod.by_ids(conn, config["eval_episode_ids"]), spec_in)
        device = resolve_device(config["device"])
        model = interface.build_model(config["model"], spec_in, config["model_config"]).to(device)
        spec = OptimizerSpec.from_config(config["optimizer"])
        optimizer = spec.build(model.parameters())
        extra = checkpoints.restore(model, optimizer, ckpt.state)
    except BaseException as exc:
        recorder.fail(exc)
        raise
    run = _Run(
        config,
        recorder,
        model,
        optimizer,
        spec,
        train,
        evaluation,
        ConvergenceTracker.from_state(extra["tracker"]),
        spec.total_steps,
        config["steps_per_epoch"],
        ckpt.step,
        config["cost"],
    )
    return recorder.guarded(lambda: _train_from(run, ckpt.step + 1, hooks or Hooks(), start=False))


def _train_from(run: _Run, first_step: int, hooks: Hooks, *, start: bool) -> dict:
    rec = run.recorder
    rec.attach(run.model)
    if start:
        rec.checkpoint(0, "start", run.model, run.optimizer, _extra(run))
    for step in range(first_step, run.total_steps + 1):
        if hooks.should_stop():
            return _interrupt(run, step - 1)
        idx = _indices(run, step)
        record = train_step(
            rec, run.model, run.optimizer, run.spec, step, _batch(run, idx), lambda idx=idx: _loss(run, idx)
        )
        run.tracker.update(record.loss_total)
        hooks.heartbeat()
        if step < run.total_steps and rec.due(step):
            _checkpoint(run, step, "periodic")
    _checkpoint(run, run.total_steps, "final")
    return _finish(run)


def _indices(run: _Run, step: int) -> torch.Tensor:
    if run.config.get("sampling") == "priority":
        gen = torch.Generator().manual_seed(run.config["seed"] * 1_000_003 + 7_919 * step)
        weights = torch.tensor(run.config["sample_weights"], dtype=torch.float64)
        return torch.multinomial(weights, run.config["batch_size"], replacement=True, generator=gen)
    epoch, j = divmod(step - 1, run.steps_per_epoch)
    gen = torch.Generator().manual_seed(run.config["seed"] * 1_000_003 + epoch)
    perm = torch.randperm(len(run.train.ids), generator=gen)
    bs = run.config["batch_size"]
    return perm[j * bs : (j + 1) * bs]


def _batch(run: _Run, idx: torch.Tensor) -> Batch:
    d = run.train
    return Batch(
        [d.ids[i] for i in idx.tolist()],
        {
            "mean_profitability_score": float(d.profitability[idx].mean()),
            "mean_actual_profit": float(d.actual_profit[idx].mean()),
            "share_profitable": float((d.actual_profit[idx] > 0).float().mean()),
        },
    )


def _loss(run: _Run, idx: torch.Tensor):
    device = next(run.model.parameters()).device
    d = run.train
    out = run.model(d.inputs[idx].to(device))
    weights = LossWeights(**run.config["loss_weights"])
    return cnn_loss(out, d.action[idx].to(device), d.move_pct[idx].to(device), d.profitability[idx].to(device), weights)


def _checkpoint(run: _Run, step: int, kind: str) -> None:
    rec, since = run.recorder, run.last_checkpoint

    def on_commit(conn: sa.Connection) -> None:
        episodes_mod.mark_trained(conn, rec.session_id, since, step)
        rec.progress(run.tracker)(conn)

    rec.checkpoint(step, kind, run.model, run.optimizer, _extra(run), on_commit)
    run.last_checkpoint = step


def _extra(run: _Run) -> dict:
    return {"tracker": run.tracker.state()}


def _interrupt(run: _Run, step: int) -> dict:
    if step > run.last_checkpoint:
        _checkpoint(run, step, "periodic")
    metrics = {"interrupted_at_step": step}
    run.recorder.interrupt(metrics, run.tracker)
    log.info("session %s interrupted after step %s", run.recorder.session_id, step)
    return {"session_id": run.recorder.session_id, "status": "interrupted", "steps": step}


def _finish(run: _Run) -> dict:
    run.recorder.mark_trained_through()
    result = lineage.judged(
        run.recorder.engine,
        run.recorder.session_id,
        run.config["eval_cutoff"],
        evaluate.evaluate(run.model, run.evaluation.inputs, run.evaluation.episodes, run.cost),
    )
    # A contaminated slice is no evidence of skill: no training value (the gate refuses it too).
    value = None if result.get("contaminated") else evaluate.training_value(run.tracker, result, run.cost)
    metrics = {
        "steps": run.total_steps,
        "train_episodes": len(run.train.ids),
        "first_loss_smoothed": run.tracker.first_loss,
        "final_loss_smoothed": run.tracker.smoothed,
        "evaluation": result,
        "writer": dataclasses.asdict(run.recorder.writer.stats),
    }
    run.recorder.finish(metrics=metrics, training_value=value, tracker=run.tracker)
    log.info("session %s finished: value %s, evaluation %s", run.recorder.session_id, value, result)
    return {
        "session_id": run.recorder.session_id,
        "status": "succeeded",
        "steps": run.total_steps,
        "training_value": value,
        "evaluation": result,
        "best_loss": run.tracker.best_loss,
        "converged": run.tracker.converged,
    }


def _decodable(conn: sa.Connection, split: episodes_mod.Split) -> tuple[episodes_mod.Split, dict]:
    """The split without episodes whose package cannot be decoded (each skipped package logged by id),
    and the decoded packages: one bad package must not stop training for every other one."""
    packages, undecodable = inputs.decode_packages(conn, [e.package_id for e in split.train + split.evaluation])
    for package_id, reason in undecodable.items():
        log.warning("skipping input package %s: %s", package_id, reason)
    if not undecodable:
        return split, packages
    train = [e for e in split.train if e.package_id not in undecodable]
    if not train:
        raise episodes_mod.NoEpisodes(
            f"every training episode's input package cannot be decoded (e.g. {next(iter(undecodable.values()))})"
        )
    evaluation = [e for e in split.evaluation if e.package_id not in undecodable]
    return dataclasses.replace(split, train=train, evaluation=evaluation), packages


def _load(
    conn: sa.Connection, eps: list[episodes_mod.Episode], spec: interface.InputSpec, packages: dict | None = None
) -> _Data:
    x = (
        inputs.load_inputs(conn, [e.package_id for e in eps], spec, packages)[0]
        if eps
        else torch.empty((0, *spec.shape()))
    )
    action = torch.tensor([interface.ACTIONS.index(e.optimal_action) for e in eps], dtype=torch.long)
    return _Data(
        [e.episode_id for e in eps],
        x,
        action,
        torch.tensor([e.move_pct for e in eps], dtype=torch.float32),
        torch.tensor([e.profitability_score for e in eps], dtype=torch.float32),
        torch.tensor([e.actual_profit for e in eps], dtype=torch.float32),
        eps,
    )


def _config(
    opts: CnnTrainOptions,
    spec: OptimizerSpec,
    spec_in: interface.InputSpec,
    split: episodes_mod.Split,
    settings: Settings,
    device: torch.device,
) -> dict:
    return {
        "symbol": opts.symbol,
        "model": opts.model,
        "model_config": opts.model_config,
        "input_spec": spec_in.to_config(),
        "optimizer": spec.to_config(),
        "loss_weights": dataclasses.asdict(opts.loss_weights),
        "batch_size": opts.batch_size,
        "epochs": opts.epochs,
        "seed": opts.seed,
        "steps_per_epoch": math.ceil(len(split.train) / opts.batch_size),
        "min_profitability": opts.min_profitability,
        "min_profit_r": opts.min_profit_r,
        "max_episodes": opts.max_episodes,
        "keep_holds": opts.keep_holds,
        "sampling": opts.sampling,
        # Priorities change as sessions train; the weights a priority-sampled session drew with are kept.
        "sample_weights": (
            [max(e.training_priority, 1e-9) for e in split.train] if opts.sampling == "priority" else None
        ),
        "eval_fraction": opts.eval_fraction,
        "eval_cutoff": split.cutoff.isoformat(),
        "patience": opts.patience,
        "device": str(device),
        "cost": 2 * (settings.fee_rate + settings.slippage_rate),
        "train_episode_ids": [e.episode_id for e in split.train],
        "eval_episode_ids": [e.episode_id for e in split.evaluation],
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
