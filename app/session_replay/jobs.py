"""The ``replay_session`` and ``verify_integrity`` job kinds: their parameter tables, which are also the
options of ``trainsrv replay session`` and ``trainsrv verify``, and their handlers. The replay code
(and torch) is imported when a job runs."""

from __future__ import annotations

import logging

from app.errors import ValidationError
from app.jobs import registry
from app.session_replay.options import OPTIMIZER_STATES, OntoOptions, ReplayOptions

log = logging.getLogger(__name__)

REPLAY_JOB = "replay_session"
VERIFY_JOB = "verify_integrity"

REPLAY_PARAMS = {
    "session_id": registry.Param(int, min=1),
    "from_step": registry.Param(int, default=None, min=0),
    "to_step": registry.Param(int, default=None, min=0),
    "verify": registry.Param(bool, default=False),
    "approximate": registry.Param(bool, default=False),
    "onto": registry.Param(str, default=None),
    "capture": registry.Param(str, default="full", choices=("full", "none")),
    "optimizer_state": registry.Param(str, default="checkpoint", choices=OPTIMIZER_STATES),
    "checkpoint_every": registry.Param(int, default=None, min=1),
    "device": registry.Param(str, default="cpu"),
}
VERIFY_PARAMS = {"session_id": registry.Param(int, default=None, min=1)}

ONTO_ONLY = ("capture", "optimizer_state", "checkpoint_every")


def check_combination(params: dict, given: set[str]) -> None:
    """Options that only mean something with (or without) ``onto`` are refused, naming the option."""
    if params["onto"] is not None and params["verify"]:
        raise ValidationError(
            "verify",
            "does not apply with onto: the new session is recorded; verify it with "
            "`trainsrv replay session NEW_ID --verify`",
        )
    stray = [name for name in ONTO_ONLY if name in given] if params["onto"] is None else []
    if stray:
        raise ValidationError(stray[0], "only applies with onto (replay onto another checkpoint)")


def replay_options(params: dict) -> ReplayOptions:
    return ReplayOptions(
        from_step=params["from_step"],
        to_step=params["to_step"],
        verify=params["verify"],
        approximate=params["approximate"],
        device=params["device"],
    )


def onto_options(params: dict) -> OntoOptions:
    return OntoOptions(
        from_step=params["from_step"] or 0,
        to_step=params["to_step"],
        approximate=params["approximate"],
        capture=params["capture"],
        checkpoint_every=params["checkpoint_every"],
        optimizer_state=params["optimizer_state"],
        device=params["device"],
    )


@registry.handler(REPLAY_JOB, **REPLAY_PARAMS)
def run_replay(ctx: registry.JobContext, params: dict) -> dict:
    """Replay (and verify) a session, or record its replay onto a checkpoint (resumed when retried)."""
    from app.session_replay import exact

    check_combination(params, {k for k in ONTO_ONLY if params[k] != REPLAY_PARAMS[k].default})
    if params["onto"] is not None:
        return _onto(ctx, params)

    stopped = []

    def on_step(step: int) -> bool:
        ctx.heartbeat()
        if ctx.should_stop():
            stopped.append(step)
        return not stopped

    report = exact.replay_session(ctx.engine, params["session_id"], replay_options(params), on_step)
    if stopped:  # a replay changes nothing stored: it simply runs again from its start checkpoint
        raise registry.Interrupted(f"replay of session {params['session_id']} stopped at step {stopped[0]}")
    return report.to_dict()


def _onto(ctx: registry.JobContext, params: dict) -> dict:
    from app.recording import sessions
    from app.recording.hooks import Hooks
    from app.session_replay import onto

    hooks = Hooks(should_stop=ctx.should_stop, heartbeat=ctx.heartbeat)
    earlier = sessions.resumable_of_job(ctx.engine, ctx.job_id) if ctx.job_id is not None else None
    if earlier is not None:
        log.info("job %s: resuming its replay session %s", ctx.job_id, earlier)
        result = onto.resume_onto(ctx.engine, earlier, hooks=hooks)
    else:
        result = onto.replay_onto(
            ctx.engine, params["session_id"], params["onto"], onto_options(params), job_id=ctx.job_id, hooks=hooks
        )
    if result["status"] == "interrupted":
        raise registry.Interrupted(
            f"replay session {result['session_id']} interrupted; it resumes when the job runs again"
        )
    return result


@registry.handler(VERIFY_JOB, **VERIFY_PARAMS)
def run_verify(ctx: registry.JobContext, params: dict) -> dict:
    """Verify every checksum of one session (or the database); problems are in the result."""
    from app.session_replay import verify

    return verify.verify_integrity(ctx.engine, params["session_id"], heartbeat=ctx.heartbeat).to_dict()
