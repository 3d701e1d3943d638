"""``trainsrv train cnn`` and the ``train_cnn`` job kind (same parameters, same code path)."""

from __future__ import annotations

import logging

from app.jobs import registry
from app.registry import jobs as registry_jobs
from app.nets.interface import REFERENCE
from app.nets.losses import LossWeights
from app.recording import sessions
from app.recording.hooks import Hooks
from app.recording.optim import OptimizerSpec
from app.trainer import cnn_train
from app.trainer.commands import (
    add_param_arguments,
    run_or_enqueue,
    shared_options,
    shared_params,
)

log = logging.getLogger(__name__)

JOB_KIND = "train_cnn"

# One table of parameters: the CLI options and the job parameters are generated from it.
PARAMS = {
    "symbol": registry.Param(str),
    "min_profitability": registry.Param(float, default=0.7, min=0.0, max=1.0),
    "min_profit_r": registry.Param(float, default=None),
    "max_episodes": registry.Param(int, default=None, min=1),
    "keep_holds": registry.Param(bool, default=True),
    "sampling": registry.Param(str, default="uniform", choices=cnn_train.SAMPLING),
    "epochs": registry.Param(int, default=10, min=1),
    "batch_size": registry.Param(int, default=32, min=1),
    "eval_fraction": registry.Param(float, default=0.2, min=0.01, max=0.99),
    **shared_params(model=REFERENCE, optimizer="adamw"),
}


def options_from(params: dict) -> cnn_train.CnnTrainOptions:
    """Training options from validated parameters (CLI or job)."""
    return cnn_train.CnnTrainOptions(
        symbol=params["symbol"], min_profitability=params["min_profitability"],
        min_profit_r=params["min_profit_r"],
        max_episodes=params["max_episodes"], keep_holds=params["keep_holds"], sampling=params["sampling"],
        epochs=params["epochs"], batch_size=params["batch_size"],
        eval_fraction=params["eval_fraction"], loss_weights=LossWeights(),
        optimizer=OptimizerSpec(name=params["optimizer"], lr=params["lr"]), **shared_options(params))


def register_train(train_sub) -> None:
    p = train_sub.add_parser("cnn", help="train the CNN on a symbol's most profitable episodes")
    add_param_arguments(p, JOB_KIND, PARAMS)
    p.set_defaults(func=_train)


def _train(args) -> int:
    return run_or_enqueue(args, JOB_KIND, PARAMS, lambda engine, params: cnn_train.train_cnn(engine, options_from(params)))


@registry.handler(JOB_KIND, **PARAMS)
def run_job(ctx: registry.JobContext, params: dict) -> dict:
    """The ``train_cnn`` job: a retried job resumes the session its earlier attempt started."""
    hooks = Hooks(should_stop=ctx.should_stop, heartbeat=ctx.heartbeat)
    earlier = sessions.resumable_of_job(ctx.engine, ctx.job_id) if ctx.job_id is not None else None
    if earlier is not None:
        log.info("job %s: resuming its session %s", ctx.job_id, earlier)
        result = cnn_train.resume_cnn(ctx.engine, earlier, hooks=hooks)
    else:
        opts = options_from(params)
        result = cnn_train.train_cnn(ctx.engine, opts, job_id=ctx.job_id, hooks=hooks, settings=ctx.settings)
    if result["status"] == "succeeded":
        result = registry_jobs.after_training(ctx.engine, result, params["promote"])
    if result["status"] == "interrupted":
        raise registry.Interrupted(f"session {result['session_id']} interrupted; it resumes when the job runs again")
    return result
