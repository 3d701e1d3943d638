"""``trainsrv train rl`` and the ``train_rl`` job kind (same parameters, same code path)."""

from __future__ import annotations

from app.jobs import registry
from app.registry import jobs as registry_jobs
from app.nets import dqn
from app.recording.hooks import Hooks
from app.recording.optim import OptimizerSpec
from app.trainer import rl_train
from app.trainer.commands import (
    add_param_arguments,
    run_or_enqueue,
    shared_options,
    shared_params,
)

JOB_KIND = "train_rl"

# One table of parameters: the CLI options and the job parameters are generated from it.
PARAMS = {
    "symbol": registry.Param(str),
    "steps": registry.Param(int, default=200, min=1),
    "batch_size": registry.Param(int, default=64, min=1),
    "profitable_share": registry.Param(float, default=None, min=0.0, max=1.0),
    "beta_start": registry.Param(float, default=None, min=0.0, max=1.0),
    "gamma": registry.Param(float, default=0.9, min=0.0, max=0.999),
    "target_update_every": registry.Param(int, default=50, min=1),
    "policy_weight": registry.Param(float, default=0.1, min=0.0),
    "reward_scale": registry.Param(float, default=1000.0, min=1e-9),
    "eval_fraction": registry.Param(float, default=0.2, min=0.01, max=0.99),
    **shared_params(model=dqn.REFERENCE, optimizer="adam"),
}


def options_from(params: dict) -> rl_train.RlTrainOptions:
    """Training options from validated parameters (CLI or job)."""
    return rl_train.RlTrainOptions(
        symbol=params["symbol"], steps=params["steps"], batch_size=params["batch_size"],
        profitable_share=params["profitable_share"], beta_start=params["beta_start"],
        agent=dqn.DqnSettings(gamma=params["gamma"], target_update_every=params["target_update_every"],
                            policy_weight=params["policy_weight"]),
        reward_scale=params["reward_scale"], eval_fraction=params["eval_fraction"],
        optimizer=OptimizerSpec(name=params["optimizer"], lr=params["lr"], weight_decay=0.0, schedule="constant"),
        **shared_options(params))


def register_train(train_sub) -> None:
    p = train_sub.add_parser("rl", help="train the RL agent (double DQN) with profit-weighted prioritized replay")
    add_param_arguments(p, JOB_KIND, PARAMS)
    p.set_defaults(func=_train)


def _train(args) -> int:
    return run_or_enqueue(args, JOB_KIND, PARAMS, lambda engine, params: rl_train.train_rl(engine, options_from(params)))


@registry.handler(JOB_KIND, **PARAMS)
def run_job(ctx: registry.JobContext, params: dict) -> dict:
    """The ``train_rl`` job: a fresh session per attempt (batches follow the live priorities)."""
    hooks = Hooks(should_stop=ctx.should_stop, heartbeat=ctx.heartbeat)
    result = rl_train.train_rl(ctx.engine, options_from(params), job_id=ctx.job_id, hooks=hooks,
                               settings=ctx.settings)
    if result["status"] == "succeeded":
        result = registry_jobs.after_training(ctx.engine, result, params["promote"])
    if result["status"] == "interrupted":
        raise registry.Interrupted(f"session {result['session_id']} interrupted after {result['steps']} steps")
    return result
