"""The ``train_cnn`` and ``train_rl`` job kinds: their parameter tables, which are also the options of
``trainsrv train cnn|rl``, and their handlers. Torch and the trainers are imported when a job runs,
so listing or queueing jobs stays light."""

from __future__ import annotations

import logging

from app.cli_common import json_object
from app.jobs import registry
from app.nets.interface import REFERENCE, RL_REFERENCE
from app.recording.optim import OPTIMIZERS
from app.recording.policy import HALF_CODECS, POLICIES
from app.registry import jobs as registry_jobs

log = logging.getLogger(__name__)

CNN_JOB = "train_cnn"
RL_JOB = "train_rl"


def _shared_params(model: str, optimizer: str) -> dict:
    """The parameters every trainer takes (model, optimizer, capture, checkpoints, seed, device)."""
    return {
        "model": registry.Param(str, default=model),
        "model_config": registry.Param(str, default=None, check=lambda name, text: json_object(name)(text)),
        "optimizer": registry.Param(str, default=optimizer, choices=OPTIMIZERS),
        "lr": registry.Param(float, default=1e-3, min=1e-12),
        "capture": registry.Param(str, default="full", choices=POLICIES),
        "capture_k": registry.Param(int, default=10, min=1),
        "half_codec": registry.Param(str, default="bf16", choices=HALF_CODECS),
        "checkpoint_every": registry.Param(int, default=50, min=1),
        "seed": registry.Param(int, default=0, min=0),
        "device": registry.Param(str, default="auto"),
        # Warm start (app/registry/warm.py) and the promotion gate after a succeeded session (docs/models.md).
        "init": registry.Param(str, default="deployed"),
        "promote": registry.Param(bool, default=True),
    }


# One table per trainer: the CLI options and the job parameters are generated from it.
CNN_PARAMS = {
    "symbol": registry.Param(str),
    "min_profitability": registry.Param(float, default=0.7, min=0.0, max=1.0),
    # The replay threshold on v_cnn_replay's profit_r scale (0 = break-even): profit_r above it.
    "min_profit_r": registry.Param(float, default=None),
    # None: every candidate (a small budget ranked by priority made the threshold a no-op; docs/training.md).
    "max_episodes": registry.Param(int, default=None, min=1, max=10_000_000),
    # Hold examples kept whatever the thresholds; uniform or priority-weighted batches (docs/evidence.md).
    "keep_holds": registry.Param(bool, default=True),
    "sampling": registry.Param(str, default="uniform", choices=("uniform", "priority")),
    "epochs": registry.Param(int, default=10, min=1, max=100_000),
    "batch_size": registry.Param(int, default=32, min=1, max=65_536),
    "eval_fraction": registry.Param(float, default=0.2, min=0.01, max=0.99),
    **_shared_params(model=REFERENCE, optimizer="adamw"),
}

RL_PARAMS = {
    "symbol": registry.Param(str),
    "steps": registry.Param(int, default=200, min=1, max=100_000_000),
    "batch_size": registry.Param(int, default=64, min=1, max=65_536),
    "profitable_share": registry.Param(float, default=None, min=0.0, max=1.0),
    "beta_start": registry.Param(float, default=None, min=0.0, max=1.0),
    "gamma": registry.Param(float, default=0.9, min=0.0, max=0.999),
    "target_update_every": registry.Param(int, default=50, min=1),
    "policy_weight": registry.Param(float, default=0.1, min=0.0),
    "reward_scale": registry.Param(float, default=1000.0, min=1e-9),
    "eval_fraction": registry.Param(float, default=0.2, min=0.01, max=0.99),
    **_shared_params(model=RL_REFERENCE, optimizer="adam"),
}


def _shared_options(params: dict) -> dict:
    """Keyword arguments of the trainers' options built from the shared parameters (not the optimizer,
    whose spec differs per trainer)."""
    from app.recording.policy import CapturePolicy

    model_config = json_object("model_config")(params["model_config"]) if params.get("model_config") else {}
    return {
        "model": params["model"],
        "model_config": model_config,
        "capture": CapturePolicy(params["capture"], params["capture_k"], params["half_codec"]),
        "checkpoint_every": params["checkpoint_every"],
        "seed": params["seed"],
        "device": params["device"],
        "init": params["init"],
    }


def cnn_options(params: dict):
    """CNN training options from validated parameters (CLI or job)."""
    from app.nets.losses import LossWeights
    from app.recording.optim import OptimizerSpec
    from app.trainer import cnn_train

    return cnn_train.CnnTrainOptions(
        symbol=params["symbol"],
        min_profitability=params["min_profitability"],
        min_profit_r=params["min_profit_r"],
        max_episodes=params["max_episodes"],
        keep_holds=params["keep_holds"],
        sampling=params["sampling"],
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        eval_fraction=params["eval_fraction"],
        loss_weights=LossWeights(),
        optimizer=OptimizerSpec(name=params["optimizer"], lr=params["lr"]),
        **_shared_options(params),
    )


def rl_options(params: dict):
    """RL training options from validated parameters (CLI or job)."""
    from app.nets import dqn
    from app.recording.optim import OptimizerSpec
    from app.trainer import rl_train

    return rl_train.RlTrainOptions(
        symbol=params["symbol"],
        steps=params["steps"],
        batch_size=params["batch_size"],
        profitable_share=params["profitable_share"],
        beta_start=params["beta_start"],
        agent=dqn.DqnSettings(
            gamma=params["gamma"],
            target_update_every=params["target_update_every"],
            policy_weight=params["policy_weight"],
        ),
        reward_scale=params["reward_scale"],
        eval_fraction=params["eval_fraction"],
        optimizer=OptimizerSpec(name=params["optimizer"], lr=params["lr"], weight_decay=0.0, schedule="constant"),
        **_shared_options(params),
    )


def _after_training(ctx: registry.JobContext, result: dict, params: dict) -> dict:
    """A succeeded session's promotion gate, as a ``promote_model`` job (app/registry/jobs.py)."""
    if result["status"] != "succeeded":
        return result
    from app.registry import jobs as registry_jobs

    return registry_jobs.after_training(ctx.engine, result, params["promote"])


def _hooks(ctx: registry.JobContext):
    from app.recording.hooks import Hooks

    return Hooks(should_stop=ctx.should_stop, heartbeat=ctx.heartbeat)


@registry.handler(CNN_JOB, **CNN_PARAMS)
def run_cnn(ctx: registry.JobContext, params: dict) -> dict:
    """The ``train_cnn`` job: a retried job resumes the session its earlier attempt started."""
    from app.recording import sessions
    from app.trainer import cnn_train

    earlier = sessions.resumable_of_job(ctx.engine, ctx.job_id) if ctx.job_id is not None else None
    if earlier is not None:
        log.info("job %s: resuming its session %s", ctx.job_id, earlier)
        result = cnn_train.resume_cnn(ctx.engine, earlier, hooks=_hooks(ctx))
    else:
        result = cnn_train.train_cnn(
            ctx.engine, cnn_options(params), job_id=ctx.job_id, hooks=_hooks(ctx), settings=ctx.settings
        )
    result = _after_training(ctx, result, params)
    if result["status"] == "interrupted":
        raise registry.Interrupted(f"session {result['session_id']} interrupted; it resumes when the job runs again")
    return registry_jobs.after_training(ctx.engine, result, params["promote"])


@registry.handler(RL_JOB, **RL_PARAMS)
def run_rl(ctx: registry.JobContext, params: dict) -> dict:
    """The ``train_rl`` job: a fresh session per attempt (batches follow the live priorities)."""
    from app.trainer import rl_train

    result = rl_train.train_rl(
        ctx.engine, rl_options(params), job_id=ctx.job_id, hooks=_hooks(ctx), settings=ctx.settings
    )
    result = _after_training(ctx, result, params)
    if result["status"] == "interrupted":
        raise registry.Interrupted(f"session {result['session_id']} interrupted after {result['steps']} steps")
    return registry_jobs.after_training(ctx.engine, result, params["promote"])
