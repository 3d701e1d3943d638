"""Train the RL agent (double DQN) with profit-weighted prioritized replay served from SQL.

Each step: sample a batch of one symbol's experiences from ``ProfitWeightedExperienceBuffer``
(part of it from profitable experiences only), turn it into tensors (``app.rl_replay.states``), run
the recorded optimizer step of ``app.recording.step.train_step`` — the same session / step /
gradient / checkpoint machinery as the CNN — then write the batch's |TD errors| back as
priorities and refresh the target network when due. A step row stores the TD and policy loss
components, Q-value statistics, the batch ids and the batch profitability (mean realised
profit, share of profitable experiences).

The batches depend on the live priorities in the database, so an RL session is not re-sampled
on replay: an exact replay reuses its stored gradients, which the full capture policy records.
For the same reason a resumed session (``resume_rl``, ``trainsrv train resume``) continues from
its last checkpoint — weights, optimizer, target network, beta schedule, convergence state —
with batches drawn from the priorities as they are now, not the ones it would have drawn.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time

import numpy as np
import sqlalchemy as sa
import torch

from app.config import Settings, get_settings
from app.errors import ValidationError
from app.nets import dqn, inputs
from app.nets.interface import InputSpec
from app.recording import checkpoints, sessions
from app.recording.convergence import ConvergenceTracker
from app.recording.hooks import Hooks, check, resolve_device
from app.recording.optim import OptimizerSpec
from app.recording.policy import CapturePolicy, WriterOptions
from app.recording.session import SessionRecorder
from app.recording.step import Batch, train_step
from app.registry import lineage, warm
from app.rl_replay.batch import BetaSchedule
from app.rl_replay.buffer import ProfitWeightedExperienceBuffer
from app.rl_replay.states import PackageStates
from app.trainer import episodes as episodes_mod
from app.trainer import evaluate, rl_holdout

log = logging.getLogger(__name__)

MODEL_KIND = "rl"


@dataclasses.dataclass
class RlTrainOptions:
    """What ``trainsrv train rl`` accepts (see docs/rl.md)."""

    symbol: str
    steps: int = 200
    batch_size: int = 64
    profitable_share: float | None = None  # None: TRAINSRV_RL_PROFITABLE_SHARE
    beta_start: float | None = None  # None: TRAINSRV_RL_BETA_START
    agent: dqn.DqnSettings = dataclasses.field(default_factory=dqn.DqnSettings)
    reward_scale: float = 1000.0  # realised profit (a fraction) -> per mille
    model: str = dqn.REFERENCE
    model_config: dict = dataclasses.field(default_factory=dict)
    optimizer: OptimizerSpec = dataclasses.field(
        default_factory=lambda: OptimizerSpec(name="adam", weight_decay=0.0, schedule="constant")
    )
    capture: CapturePolicy = dataclasses.field(default_factory=CapturePolicy)
    checkpoint_every: int = 50
    patience: int = 100
    seed: int = 0
    device: str = "auto"
    eval_fraction: float = 0.2
    init: str = "deployed"  # deployed | session:ID | scratch (app/registry/warm.py)

    def validate(self) -> None:
        check("symbol", bool(self.symbol and self.symbol.strip()), "must be a non-empty string")
        warm.parse(self.init)
        check("eval_fraction", 0 < self.eval_fraction < 1, "must be in (0, 1)")
        check("steps", self.steps >= 1, "must be >= 1")
        check("batch_size", self.batch_size >= 1, "must be >= 1")
        check("reward_scale", self.reward_scale > 0, "must be > 0")
        check("checkpoint_every", self.checkpoint_every >= 1, "must be >= 1")
        check("patience", self.patience >= 1, "must be >= 1")
        for name in ("profitable_share", "beta_start"):
            value = getattr(self, name)
            check(name, value is None or 0.0 <= value <= 1.0, "must be in [0, 1]")


@dataclasses.dataclass
class _Run:
    opts: RlTrainOptions
    config: dict
    recorder: SessionRecorder
    agent: dqn.DoubleDQN
    optimizer: torch.optim.Optimizer
    spec: OptimizerSpec
    buffer: ProfitWeightedExperienceBuffer
    states: PackageStates
    tracker: ConvergenceTracker
    device: torch.device
    holdout: _Holdout
    td_history: list[float] = dataclasses.field(default_factory=list)
    last_checkpoint: int = 0


@dataclasses.dataclass
class _Holdout:
    """The evaluation slice (later episodes) and the experiences that may be trained on (before it)."""

    cutoff: dt.datetime
    allowed: np.ndarray
    episodes: list[episodes_mod.Episode]
    inputs: torch.Tensor
    cost: float
    keep_share: float = 1.0  # share of the symbol's experiences in ``allowed`` (rl_holdout.sample draws for it)


def train_rl(
    engine: sa.Engine,
    opts: RlTrainOptions,
    *,
    job_id: int | None = None,
    hooks: Hooks | None = None,
    settings: Settings | None = None,
    writer_options: WriterOptions | None = None,
) -> dict:
    """Train a new RL session on ``opts.symbol``'s experiences; returns its summary."""
    opts.validate()
    settings = settings or get_settings()
    device = resolve_device(opts.device if opts.device != "auto" else settings.device)
    buffer = _buffer(engine, opts, settings)
    if buffer.size(opts.symbol)["total"] == 0:
        raise ValidationError(
            "symbol", f"no replayable experiences for {opts.symbol!r} (build them with `trainsrv experiences build`)"
        )
    spec = dataclasses.replace(opts.optimizer, total_steps=opts.steps)
    with engine.connect() as conn:
        states = PackageStates.for_symbol(conn, opts.symbol)
        holdout = _holdout(conn, opts, states, settings)
        config = _config(opts, spec, states, buffer, device, holdout)
        start = warm.resolve(
            conn,
            opts.init,
            model_kind=MODEL_KIND,
            symbol=opts.symbol,
            architecture={k: config[k] for k in ("model", "model_config", "input_spec")},
        )
    config["init"] = start.to_config()
    torch.manual_seed(opts.seed)
    online = dqn.build_q_network(opts.model, states.spec, opts.model_config).to(device)
    warm.apply(online, start)
    agent = dqn.DoubleDQN(online, opts.agent)
    recorder = warm.record_session(engine, MODEL_KIND, opts, config, device, start, job_id, writer_options)
    run = _Run(
        opts,
        config,
        recorder,
        agent,
        spec.build(online.parameters()),
        spec,
        buffer,
        states,
        ConvergenceTracker(patience=opts.patience),
        device,
        holdout,
    )
    try:
        return _train(run, hooks or Hooks())
    except BaseException as exc:
        log.error("session %s failed: %s", recorder.session_id, exc)
        recorder.fail(exc)
        raise
    finally:
        _close(buffer)


def resume_rl(
    engine: sa.Engine,
    session_id: int,
    *,
    hooks: Hooks | None = None,
    settings: Settings | None = None,
    writer_options: WriterOptions | None = None,
) -> dict:
    """Continue the RL session ``session_id`` from its last checkpoint to its configured steps."""
    settings = settings or get_settings()
    recorder, ckpt = SessionRecorder.resume(engine, session_id, writer_options)
    buffer = None
    try:
        config = sessions.config_of(engine, session_id)
        opts = options_of(config)
        buffer = _buffer(engine, opts, settings)
        states = PackageStates(InputSpec(**config["input_spec"]))  # the inputs it was trained on
        with engine.connect() as conn:
            holdout = _holdout_of(conn, config, opts, states, settings)
        device = resolve_device(config["device"])
        online = dqn.build_q_network(opts.model, states.spec, opts.model_config).to(device)
        agent = dqn.DoubleDQN(online, opts.agent)
        spec = OptimizerSpec.from_config(config["optimizer"])
        optimizer = spec.build(online.parameters())
        extra = checkpoints.restore(online, optimizer, ckpt.state)
        agent.target.load_state_dict(extra["target"])
        buffer.samples_drawn = int(extra.get("beta_step", 0))
    except BaseException as exc:
        recorder.fail(exc)
        if buffer is not None:
            _close(buffer)
        raise
    run = _Run(
        opts,
        config,
        recorder,
        agent,
        optimizer,
        spec,
        buffer,
        states,
        ConvergenceTracker.from_state(extra["tracker"]),
        device,
        holdout,
        last_checkpoint=ckpt.step,
    )
    try:
        return recorder.guarded(lambda: _train_from(run, ckpt.step + 1, hooks or Hooks()))
    finally:
        _close(buffer)


def options_of(config: dict) -> RlTrainOptions:
    """The options a session was started with, from its stored config."""
    replay = config.get("replay", {})
    return RlTrainOptions(
        symbol=config["symbol"],
        steps=config["steps"],
        batch_size=config["batch_size"],
        profitable_share=replay.get("profitable_share"),
        beta_start=replay.get("beta_start"),
        agent=dqn.DqnSettings(**config["agent"]),
        reward_scale=config["reward_scale"],
        model=config["model"],
        model_config=config["model_config"],
        optimizer=OptimizerSpec.from_config(config["optimizer"]),
        capture=CapturePolicy.from_config(config["capture"]),
        checkpoint_every=config["checkpoint_every"],
        patience=config["patience"],
        seed=config["seed"],
        device=config["device"],
        eval_fraction=config.get("eval_fraction", 0.2),
    )


def _close(buffer: ProfitWeightedExperienceBuffer) -> None:
    """Fold the session's logged write-backs and draws into experiences; a failure only leaves them logged
    (the views read the logs, the next fold takes them), so it must not hide how the session ended."""
    try:
        buffer.close()
    except sa.exc.SQLAlchemyError as exc:
        log.warning("replay fold at the end of the session failed, the logs stay for the next one: %s", exc)


def _holdout(conn: sa.Connection, opts: RlTrainOptions, states: PackageStates, settings: Settings) -> _Holdout:
    """The symbol's later episodes (evaluation) and the experiences whose data ended before them."""
    cutoff, eps = rl_holdout.evaluation_slice(conn, opts.symbol, opts.eval_fraction)
    if cutoff is None:
        raise ValidationError("symbol", f"{opts.symbol!r} has no RL episodes (validated RL calls) to evaluate on")
    allowed = rl_holdout.training_items(conn, opts.symbol, cutoff)
    if not len(allowed):
        raise ValidationError(
            "eval_fraction",
            f"no experience of {opts.symbol!r} ended before the evaluation cutoff {cutoff} (lower --eval-fraction)",
        )
    x = inputs.load_inputs(conn, [e.package_id for e in eps], states.spec)[0]
    return _Holdout(
        cutoff,
        allowed,
        eps,
        x,
        2 * (settings.fee_rate + settings.slippage_rate),
        rl_holdout.keep_share(conn, opts.symbol, allowed),
    )


def _holdout_of(
    conn: sa.Connection, config: dict, opts: RlTrainOptions, states: PackageStates, settings: Settings
) -> _Holdout:
    """A resumed session's hold-out: the slice it recorded (a session from before migration 0015 gets one now)."""
    if "eval_cutoff" not in config:
        return _holdout(conn, opts, states, settings)
    cutoff = dt.datetime.fromisoformat(config["eval_cutoff"])
    eps = rl_holdout.episodes_by_id(conn, config["eval_episode_ids"])
    x = inputs.load_inputs(conn, [e.package_id for e in eps], states.spec)[0]
    allowed = rl_holdout.training_items(conn, opts.symbol, cutoff)
    return _Holdout(cutoff, allowed, eps, x, config["cost"], rl_holdout.keep_share(conn, opts.symbol, allowed))


def _buffer(engine: sa.Engine, opts: RlTrainOptions, settings: Settings) -> ProfitWeightedExperienceBuffer:
    beta = BetaSchedule(settings.rl_beta_start if opts.beta_start is None else opts.beta_start, max(opts.steps, 1))
    return ProfitWeightedExperienceBuffer(
        engine, seed=opts.seed, settings=settings, profitable_share=opts.profitable_share, beta=beta
    )


def _train(run: _Run, hooks: Hooks) -> dict:
    run.recorder.attach(run.agent.online)
    run.recorder.checkpoint(0, "start", run.agent.online, run.optimizer, _extra(run))
    return _train_from(run, 1, hooks)


def _train_from(run: _Run, first_step: int, hooks: Hooks) -> dict:
    rec = run.recorder
    if first_step > 1:
        rec.attach(run.agent.online)
    for step in range(first_step, run.opts.steps + 1):
        if hooks.should_stop():
            return _interrupt(run, step - 1)
        record = _step(run, step)
        run.tracker.update(record.loss_total)
        run.td_history.append(record.loss_components["td"])
        hooks.heartbeat()
        if step < run.opts.steps and rec.due(step):
            _checkpoint(run, step, "periodic")
    _checkpoint(run, run.opts.steps, "final")
    return _finish(run)


def _step(run: _Run, step: int):
    """Sample, train one recorded step, write the TD errors back, refresh the target when due."""
    t0 = time.perf_counter()
    sampled = rl_holdout.sample(
        run.buffer,
        run.holdout.allowed,
        run.opts.batch_size,
        symbol=run.opts.symbol,
        beta=run.buffer.beta.at(step - 1),
        keep_share=run.holdout.keep_share,
    )
    with run.buffer.engine.connect() as conn:
        batch = run.states.transitions(conn, sampled, run.opts.reward_scale).to(run.device)
    load_ms = round((time.perf_counter() - t0) * 1000.0, 3)
    out: dict = {}

    def compute_loss():
        loss, components, td = run.agent.loss(batch)
        out["td"] = td
        return loss, components

    record = train_step(
        run.recorder,
        run.agent.online,
        run.optimizer,
        run.spec,
        step,
        Batch(sampled.ids.tolist(), sampled.profitability(), load_ms),
        compute_loss,
    )
    run.buffer.update_priorities(sampled.ids, out["td"].cpu().numpy())
    run.agent.after_step(step)
    return record


def _extra(run: _Run) -> dict:
    return {
        "tracker": run.tracker.state(),
        "target": run.agent.target.state_dict(),
        "beta_step": run.buffer.samples_drawn,
    }


def _checkpoint(run: _Run, step: int, kind: str) -> None:
    run.recorder.checkpoint(
        step, kind, run.agent.online, run.optimizer, _extra(run), run.recorder.progress(run.tracker)
    )
    run.last_checkpoint = step


def _interrupt(run: _Run, step: int) -> dict:
    if step > run.last_checkpoint:
        _checkpoint(run, step, "periodic")
    run.recorder.interrupt({"interrupted_at_step": step}, run.tracker)
    return {"session_id": run.recorder.session_id, "status": "interrupted", "steps": step}


def _finish(run: _Run) -> dict:
    # A resumed session knows the TD losses of its own steps only (the earlier ones are in training_steps).
    window = max(1, min(10, len(run.td_history) // 4))
    first = sum(run.td_history[:window]) / window if run.td_history else 0.0
    last = sum(run.td_history[-window:]) / window if run.td_history else 0.0
    run.recorder.mark_trained_through()
    result = lineage.judged(run.recorder.engine, run.recorder.session_id, run.holdout.cutoff, _evaluate(run))
    # The same value as the CNN's, from the greedy policy's calls on the later slice (docs/rl.md); a
    # contaminated slice is no evidence of skill.
    value = None if result.get("contaminated") else evaluate.training_value(run.tracker, result, run.holdout.cost)
    metrics = {
        "steps": run.opts.steps,
        "td_loss_first": first,
        "td_loss_last": last,
        "first_loss_smoothed": run.tracker.first_loss,
        "final_loss_smoothed": run.tracker.smoothed,
        "evaluation": result,
        "replay": run.buffer.size(run.opts.symbol),
        "writer": dataclasses.asdict(run.recorder.writer.stats),
    }
    run.recorder.finish(metrics=metrics, training_value=value, tracker=run.tracker)
    log.info(
        "session %s finished: TD loss %.4g -> %.4g, value %s, evaluation %s",
        run.recorder.session_id,
        first,
        last,
        value,
        result,
    )
    return {
        "session_id": run.recorder.session_id,
        "status": "succeeded",
        "steps": run.opts.steps,
        "td_loss_first": first,
        "td_loss_last": last,
        "training_value": value,
        "evaluation": result,
        "best_loss": run.tracker.best_loss,
        "converged": run.tracker.converged,
    }


def _evaluate(run: _Run) -> dict:
    """The greedy policy's calls on the later slice, with the CNN's metrics (``evaluate.policy_metrics``)."""
    if not run.holdout.episodes:
        return {}
    calls = evaluate.greedy_calls(run.agent.online, run.holdout.inputs)
    return evaluate.policy_metrics(calls, run.holdout.episodes, run.holdout.cost)


def _config(
    opts: RlTrainOptions,
    spec: OptimizerSpec,
    states: PackageStates,
    buffer: ProfitWeightedExperienceBuffer,
    device: torch.device,
    holdout: _Holdout,
) -> dict:
    return {
        "symbol": opts.symbol,
        "model": opts.model,
        "model_config": opts.model_config,
        "input_spec": states.spec.to_config(),
        "optimizer": spec.to_config(),
        "agent": dataclasses.asdict(opts.agent),
        "reward_scale": opts.reward_scale,
        "batch_size": opts.batch_size,
        "steps": opts.steps,
        "seed": opts.seed,
        "patience": opts.patience,
        "replay": {
            "profitable_share": buffer.profitable_share,
            "beta_start": buffer.beta.start,
            "beta_steps": buffer.beta.steps,
            "priority_epsilon": buffer.priority_epsilon,
            **buffer.config(),
        },
        "eval_fraction": opts.eval_fraction,
        "eval_cutoff": holdout.cutoff.isoformat(),
        "cost": holdout.cost,
        "eval_episode_ids": [e.episode_id for e in holdout.episodes],
        "train_experiences": len(holdout.allowed),
        "device": str(device),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
