"""Session replay onto another starting point: a stored session's gradients applied to a given
checkpoint, recorded as a NEW session (``parent_session_id`` = the source session).

The new session rebuilds the source's model and optimizer spec, loads the target checkpoint's
model state (and, with ``optimizer_state="checkpoint"``, its optimizer state, keeping the
source's hyper-parameters) and applies the source's steps ``from_step + 1 .. to_step`` in order:
new step ``n`` gets source step ``from_step + n``'s stored gradients and that step's learning
rate from the source's schedule. It is recorded through ``app.recording.session`` like any
training run — step rows (the source step's loss, batch and profitability: they describe the
batch whose gradients were applied), gradients by the new session's capture policy, start /
periodic / final checkpoints — so with ``full`` capture the new session is itself replay-exact
and ``replay_session`` verifies it.

Targets are written ``SESSION`` (its latest checkpoint), ``SESSION@STEP`` (its checkpoint at
STEP) or ``checkpoint:ID`` (a checkpoint row id).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import sqlalchemy as sa
import torch

from app.db import models
from app.errors import ValidationError
from app.recording import checkpoints, sessions, stored_steps
from app.recording.convergence import ConvergenceTracker
from app.recording.hooks import Hooks
from app.recording.policy import CapturePolicy
from app.recording.session import SessionRecorder, SessionSpec
from app.recording.writer import StepRecord
from app.retention import locks as retention_locks
from app.session_replay import rebuild
from app.session_replay.exact import ReplayError, check_replayable, torch_threads
from app.session_replay.options import OntoOptions, ReplayOptions, Target

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Run:
    source: object
    recorder: SessionRecorder
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    from_step: int
    total: int
    last_checkpoint: int = 0


def replay_onto(
    engine: sa.Engine,
    source_id: int,
    onto: str | Target,
    options: OntoOptions | None = None,
    *,
    job_id: int | None = None,
    hooks: Hooks | None = None,
) -> dict:
    """Apply ``source_id``'s stored gradients to the ``onto`` checkpoint as a new recorded session (holding
    the replay lock on the source throughout: retention never prunes what it reads)."""
    with retention_locks.reading(engine, source_id):
        return _replay_onto(engine, source_id, onto, options, job_id, hooks)


def _replay_onto(
    engine: sa.Engine,
    source_id: int,
    onto: str | Target,
    options: OntoOptions | None,
    job_id: int | None,
    hooks: Hooks | None,
) -> dict:
    opts = options or OntoOptions()
    opts.validate()
    target = onto if isinstance(onto, Target) else Target.parse(onto)
    with engine.connect() as conn:
        source = sessions.get(conn, source_id)
        check_replayable(source, ReplayOptions(approximate=opts.approximate))
        to_step = _source_range(conn, source, opts)
        ckpt = _resolve(conn, target)
        onto_row = sessions.get(conn, ckpt.session_id)
    model, optimizer = _start_state(source, onto_row, ckpt, opts)
    config = _config(source, onto_row, ckpt, opts, to_step)
    every = opts.checkpoint_every or int(source.config.get("checkpoint_every", 50))
    recorder = SessionRecorder.start(
        engine,
        SessionSpec(
            source.model_kind,
            source.model_name,
            config,
            source.seed,
            opts.device,
            CapturePolicy(opts.capture),
            every,
            job_id,
            parent_session_id=source.id,
        ),
    )
    run = _Run(
        source, recorder, model, optimizer, rebuild.lr_schedule(source.config), opts.from_step, to_step - opts.from_step
    )
    return run.recorder.guarded(lambda: _apply_from(engine, run, 1, hooks or Hooks(), start=True))


def resume_onto(engine: sa.Engine, session_id: int, *, hooks: Hooks | None = None) -> dict:
    """Continue a failed / interrupted / killed replay-onto session from its last checkpoint."""
    with engine.connect() as conn:
        row = sessions.get(conn, session_id)
    replay = (row.config or {}).get("replay")
    if not replay:
        raise ValidationError("session", f"session {session_id} was not recorded by a replay onto a checkpoint")
    with retention_locks.reading(engine, replay["source_session_id"]):
        return _resume_onto(engine, session_id, row, replay, hooks)


def _resume_onto(engine: sa.Engine, session_id: int, row, replay: dict, hooks: Hooks | None) -> dict:
    recorder, ckpt = SessionRecorder.resume(engine, session_id)
    try:
        with engine.connect() as conn:
            source = sessions.get(conn, replay["source_session_id"])
        check_replayable(source, ReplayOptions(approximate=True))  # refuses a source pruned meanwhile
        model = rebuild.build_model(source.model_kind, source.model_name, source.config).to(row.device)
        optimizer = rebuild.optimizer_spec(source.config).build(model.parameters())
        checkpoints.restore(model, optimizer, ckpt.state, rng=False)
    except BaseException as exc:
        recorder.fail(exc)
        raise
    run = _Run(
        source,
        recorder,
        model,
        optimizer,
        rebuild.lr_schedule(source.config),
        replay["from_step"],
        replay["to_step"] - replay["from_step"],
    )
    run.last_checkpoint = ckpt.step
    return run.recorder.guarded(lambda: _apply_from(engine, run, ckpt.step + 1, hooks or Hooks(), start=False))


def is_onto_session(config: dict | None) -> bool:
    """Whether a session was recorded by ``replay_onto`` (and so resumes with ``resume_onto``)."""
    # An RL training session's config also has a "replay" entry (its replay buffer's settings).
    replay = (config or {}).get("replay")
    return isinstance(replay, dict) and "source_session_id" in replay


def _source_range(conn: sa.Connection, source, opts: OntoOptions) -> int:
    last = (
        conn.execute(
            sa.select(sa.func.max(models.TrainingStep.step)).where(models.TrainingStep.session_id == source.id)
        ).scalar()
        or 0
    )
    to_step = last if opts.to_step is None else opts.to_step
    if not opts.from_step < to_step <= last:
        raise ValidationError(
            "to_step",
            f"source session {source.id} has steps 1..{last}; "
            f"need from_step ({opts.from_step}) < to_step ({to_step}) <= {last}",
        )
    return to_step


def _resolve(conn: sa.Connection, target: Target) -> checkpoints.StoredCheckpoint:
    if target.checkpoint_id is None:
        sessions.get(conn, target.session_id)
        return checkpoints.load(conn, target.session_id, target.step)
    table = models.Checkpoint.__table__
    found = conn.execute(sa.select(table.c.session_id, table.c.step).where(table.c.id == target.checkpoint_id)).first()
    if found is None:
        raise ValidationError("onto", f"no checkpoint with id {target.checkpoint_id}")
    return checkpoints.load(conn, found.session_id, found.step)


def _start_state(
    source, onto_row, ckpt: checkpoints.StoredCheckpoint, opts: OntoOptions
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The source's model and optimizer, holding the target checkpoint's weights (and moments)."""
    model = rebuild.build_model(source.model_kind, source.model_name, source.config).to(opts.device)
    optimizer = rebuild.optimizer_spec(source.config).build(model.parameters())
    try:
        model.load_state_dict(ckpt.state["model"])
    except RuntimeError as exc:
        raise ValidationError(
            "onto",
            f"checkpoint {ckpt.id} (session {ckpt.session_id}, step {ckpt.step}) does "
            f"not fit session {source.id}'s model {source.model_name}: {exc}",
        ) from None
    if opts.optimizer_state == "checkpoint":
        _load_optimizer(source, onto_row, ckpt, optimizer)
    return model, optimizer


def _load_optimizer(source, onto_row, ckpt: checkpoints.StoredCheckpoint, optimizer: torch.optim.Optimizer) -> None:
    """Continue the checkpoint's optimizer state (moments, step counts) with the source's hyper-parameters."""
    mine = rebuild.optimizer_spec(source.config).name
    theirs = (onto_row.config.get("optimizer") or {}).get("name")
    if theirs != mine:
        raise ValidationError(
            "optimizer_state",
            f"session {onto_row.id} used optimizer {theirs!r}, session "
            f"{source.id} {mine!r}: its state cannot be continued; use fresh",
        )
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt.state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise ValidationError(
            "optimizer_state", f"checkpoint {ckpt.id}'s optimizer state does not fit: {exc}"
        ) from None
    for group, values in zip(optimizer.param_groups, hyper):
        group.update(values)


def _config(source, onto_row, ckpt: checkpoints.StoredCheckpoint, opts: OntoOptions, to_step: int) -> dict:
    config = {k: v for k, v in source.config.items() if k not in ("capture", "checkpoint_every", "replay")}
    config["replay"] = {
        "source_session_id": source.id,
        "from_step": opts.from_step,
        "to_step": to_step,
        "step_offset": rebuild.step_offset(source.config) + opts.from_step,
        "onto_checkpoint_id": ckpt.id,
        "onto_session_id": onto_row.id,
        "onto_step": ckpt.step,
        "optimizer_state": opts.optimizer_state,
        "source_replay_exact": bool(source.replay_exact),
    }
    return config


def _apply_from(engine: sa.Engine, run: _Run, first: int, hooks: Hooks, *, start: bool) -> dict:
    with torch_threads():
        return _apply_steps(engine, run, first, hooks, start=start)


def _apply_steps(engine: sa.Engine, run: _Run, first: int, hooks: Hooks, *, start: bool) -> dict:
    rec = run.recorder
    rec.attach(run.model)
    if start:
        rec.checkpoint(0, "start", run.model, run.optimizer, {"source_step": run.from_step})
    expected, skipped = first, 0
    for stored in stored_steps.read_steps(engine, run.source.id, run.from_step + first, run.from_step + run.total):
        n = stored.step - run.from_step
        if n != expected:
            raise ReplayError(f"source session {run.source.id}: step {run.from_step + expected} is missing")
        if hooks.should_stop():
            return _interrupt(run, n - 1)
        skipped += _apply(run, n, stored)
        hooks.heartbeat()
        if n < run.total and rec.due(n):
            _checkpoint(run, n, "periodic")
        expected = n + 1
    if expected != run.total + 1:
        raise ReplayError(f"source session {run.source.id}: step {run.from_step + expected} is missing")
    _checkpoint(run, run.total, "final")
    return _finish(run, skipped)


def _apply(run: _Run, n: int, stored: stored_steps.StoredStep) -> int:
    """Apply one source step as new step ``n``; 1 when it had no stored gradients (skipped)."""
    t0 = time.perf_counter()
    params = dict(run.model.named_parameters())
    unknown = sorted(set(stored.gradients) - set(params))
    if unknown:
        raise ReplayError(
            f"source session {run.source.id}, step {stored.step}: gradient for unknown parameter {unknown[0]!r}"
        )
    for name, param in params.items():
        grad = stored.gradients.get(name)
        param.grad = None if grad is None else grad.to(param.device)
    lr = run.lr_at(stored.step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    captured = run.recorder.capture(n) if stored.gradients else None
    if stored.gradients:
        run.optimizer.step()
    optimizer_ms = round((time.perf_counter() - t0) * 1000.0, 3)
    timings = {"optimizer": optimizer_ms, "total": optimizer_ms}
    run.recorder.record_step(
        StepRecord(
            n,
            stored.loss_total,
            stored.loss_components,
            stored.grad_norm,
            lr,
            stored.batch_ids,
            stored.batch_profitability,
            timings,
            captured,
        )
    )
    return 0 if stored.gradients else 1


def _checkpoint(run: _Run, n: int, kind: str) -> None:
    run.recorder.checkpoint(n, kind, run.model, run.optimizer, {"source_step": run.from_step + n})
    run.last_checkpoint = n


def _interrupt(run: _Run, step: int) -> dict:
    if step > run.last_checkpoint:
        _checkpoint(run, step, "periodic")
    run.recorder.interrupt({"interrupted_at_step": step}, ConvergenceTracker())
    return {"session_id": run.recorder.session_id, "status": "interrupted", "steps": step}


def _finish(run: _Run, skipped: int) -> dict:
    rec = run.recorder
    metrics = {
        "steps": run.total,
        "source_session_id": run.source.id,
        "skipped_steps": skipped,
        "writer": dataclasses.asdict(rec.writer.stats),
    }
    rec.finish(metrics=metrics, training_value=None, tracker=ConvergenceTracker())
    params_hash = checkpoints.params_hash(run.model).hex()
    log.info("replay of session %s recorded as session %s (%s steps)", run.source.id, rec.session_id, run.total)
    return {
        "session_id": rec.session_id,
        "status": "succeeded",
        "parent_session_id": run.source.id,
        "steps": run.total,
        "skipped_steps": skipped,
        "final_params_hash": params_hash,
    }
