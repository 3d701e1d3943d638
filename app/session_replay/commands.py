"""``trainsrv replay ...`` / ``trainsrv verify`` and the ``replay_session`` / ``verify_integrity`` job kinds.

The CLI options and the job parameters come from one table each (``REPLAY_PARAMS``,
``VERIFY_PARAMS``) and run the same code: ``app.session_replay.exact``, ``app.session_replay.onto``
and ``app.session_replay.verify``.
"""

from __future__ import annotations

import logging

from app import cli
from app.errors import ValidationError
from app.jobs import registry
from app.recording import sessions
from app.recording.hooks import Hooks
from app.session_replay import exact, onto, verify
from app.trainer.commands import enqueue_and_print, print_result

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
    "optimizer_state": registry.Param(str, default="checkpoint", choices=onto.OPTIMIZER_STATES),
    "checkpoint_every": registry.Param(int, default=None, min=1),
    "device": registry.Param(str, default="cpu"),
}
VERIFY_PARAMS = {"session_id": registry.Param(int, default=None, min=1)}

_HELP = {
    "from_step": "start from the nearest checkpoint at or before this step (with --onto: apply the source "
                 "steps after it; default 0)",
    "to_step": "last step to replay (default: the session's last stored step)",
    "verify": "require every checkpoint to be reproduced bit for bit (exit 1 at the first divergence)",
    "approximate": "replay a lossy (every_k / half) session anyway, comparing checkpoints by distance",
    "onto": "apply the session's gradients to SESSION, SESSION@STEP or checkpoint:ID and record a new session",
    "capture": "with --onto: gradient capture of the new session (full keeps it replay-exact)",
    "optimizer_state": "with --onto: continue the target checkpoint's optimizer state, or start fresh",
    "checkpoint_every": "with --onto: checkpoint interval of the new session (default: the source's)",
    "device": "device to replay on (bit-exactness needs the device the session was recorded on)",
}


# -- CLI ------------------------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser("replay", help="replay a recorded session from its stored gradients")
    replay_sub = p.add_subparsers(dest="replay_command", required=True, metavar="WHAT")
    s = replay_sub.add_parser("session", help="replay (and verify) a session, or replay it onto a checkpoint")
    s.add_argument("session_id", type=int)
    for name, param in REPLAY_PARAMS.items():
        if name == "session_id":
            continue
        flag = "--" + name.replace("_", "-")
        if param.type is bool:
            s.add_argument(flag, action="store_true", default=None, help=_HELP.get(name))
        else:
            s.add_argument(flag, type=param.type, default=None, choices=param.choices, help=_HELP.get(name))
    s.add_argument("--enqueue", action="store_true", help=f"queue a {REPLAY_JOB} job instead of replaying now")
    s.add_argument("--json", action="store_true", help="print the full report as JSON")
    s.set_defaults(func=_replay)
    r = replay_sub.add_parser("resume", help="continue an interrupted / failed replay-onto session")
    r.add_argument("session_id", type=int)
    r.set_defaults(func=_resume)
    v = sub.add_parser("verify", help="recompute every checksum and list corrupted or missing rows")
    v.add_argument("--session", dest="session_id", type=int, default=None, help="only this session")
    v.add_argument("--enqueue", action="store_true", help=f"queue a {VERIFY_JOB} job instead")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_verify)


def _replay(args) -> int:
    raw = {name: getattr(args, name) for name in REPLAY_PARAMS if getattr(args, name) is not None}
    engine = cli.open_db()
    if args.enqueue:
        return enqueue_and_print(engine, REPLAY_JOB, raw)
    params = registry.get(REPLAY_JOB).validate(raw)
    check_combination(params, set(raw))
    if params["onto"] is not None:
        print_result(onto.replay_onto(engine, params["session_id"], params["onto"], onto_options(params)))
        return 0
    report = exact.replay_session(engine, params["session_id"], replay_options(params))
    if args.json:
        print_result(report.to_dict())
    else:
        print(summary(report))
    return 1 if params["verify"] and report.divergence is not None else 0


def _resume(args) -> int:
    print_result(onto.resume_onto(cli.open_db(), args.session_id))
    return 0


def _verify(args) -> int:
    engine = cli.open_db()
    raw = {} if args.session_id is None else {"session_id": args.session_id}
    if args.enqueue:
        return enqueue_and_print(engine, VERIFY_JOB, raw)
    report = verify.verify_integrity(engine, registry.get(VERIFY_JOB).validate(raw)["session_id"])
    if args.json:
        print_result(report.to_dict())
    else:
        print(verify_summary(report))
    return 0 if report.ok else 1




def summary(report: exact.ReplayReport) -> str:
    """A few lines a person reads after ``trainsrv replay session``."""
    lines = [f"session {report.session_id}: replayed from checkpoint {report.start_checkpoint} to step "
             f"{report.to_step} ({report.steps_applied} steps applied, {report.steps_skipped} skipped) in "
             f"{report.elapsed_s:.2f} s ({report.steps_per_s:.1f} steps/s)"]
    matched = sum(c.matches for c in report.checks)
    if report.exact is None:
        worst = max((c.max_abs_diff or 0.0 for c in report.checks), default=0.0)
        lines.append(f"approximate replay: {matched}/{len(report.checks)} checkpoints identical, "
                     f"largest parameter difference {worst:.3g}")
    elif report.divergence is None:
        lines.append(f"bit-exact: {matched}/{len(report.checks)} checkpoints reproduced (parameters and "
                     "optimizer state hashes equal)")
    else:
        d = report.divergence
        differing = f"; differing parameters: {', '.join(d.params_differing[:5])}" if d.params_differing else ""
        lines.append(f"DIVERGED at step {d.step} (last matching step {d.last_matching_step}): {d.reason}{differing}")
    lines.append(f"final params hash {report.final_params_hash}")
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)


def verify_summary(report: verify.IntegrityReport) -> str:
    """``trainsrv verify`` output: what was checked, then one line per problem."""
    scope = f"session {report.session_id}" if report.session_id is not None else "database"
    checked = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in report.checked.items())
    lines = [f"verified {scope}: {checked}"]
    lines.extend(p.describe() for p in report.problems)
    lines.extend(f"note: {n}" for n in report.notes)
    lines.append("ok: no corrupted or missing rows" if report.ok else f"{len(report.problems)} problem(s) found")
    return "\n".join(lines)


# -- options from parameters ----------------------------------------------------------------------

ONTO_ONLY = ("capture", "optimizer_state", "checkpoint_every")


def check_combination(params: dict, given: set[str]) -> None:
    """Options that only mean something with (or without) ``onto`` are refused, naming the option."""
    if params["onto"] is not None and params["verify"]:
        raise ValidationError("verify", "does not apply with onto: the new session is recorded; verify it with "
                                        "`trainsrv replay session NEW_ID --verify`")
    stray = [name for name in ONTO_ONLY if name in given] if params["onto"] is None else []
    if stray:
        raise ValidationError(stray[0], "only applies with onto (replay onto another checkpoint)")


def replay_options(params: dict) -> exact.ReplayOptions:
    return exact.ReplayOptions(from_step=params["from_step"], to_step=params["to_step"], verify=params["verify"],
                                approximate=params["approximate"], device=params["device"])


def onto_options(params: dict) -> onto.OntoOptions:
    return onto.OntoOptions(from_step=params["from_step"] or 0, to_step=params["to_step"],
                                   approximate=params["approximate"], capture=params["capture"],
                                   checkpoint_every=params["checkpoint_every"],
                                   optimizer_state=params["optimizer_state"], device=params["device"])


# -- jobs -------------------------------------------------------------------------------------------

@registry.handler(REPLAY_JOB, **REPLAY_PARAMS)
def run_replay_job(ctx: registry.JobContext, params: dict) -> dict:
    """Replay (and verify) a session, or record its replay onto a checkpoint (resumed when retried)."""
    check_combination(params, {k for k in ONTO_ONLY if params[k] != REPLAY_PARAMS[k].default})
    if params["onto"] is not None:
        return _onto_job(ctx, params)

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


def _onto_job(ctx: registry.JobContext, params: dict) -> dict:
    hooks = Hooks(should_stop=ctx.should_stop, heartbeat=ctx.heartbeat)
    earlier = sessions.resumable_of_job(ctx.engine, ctx.job_id) if ctx.job_id is not None else None
    if earlier is not None:
        log.info("job %s: resuming its replay session %s", ctx.job_id, earlier)
        result = onto.resume_onto(ctx.engine, earlier, hooks=hooks)
    else:
        result = onto.replay_onto(ctx.engine, params["session_id"], params["onto"], onto_options(params),
                                         job_id=ctx.job_id, hooks=hooks)
    if result["status"] == "interrupted":
        raise registry.Interrupted(f"replay session {result['session_id']} interrupted; it resumes when the job "
                                   "runs again")
    return result


@registry.handler(VERIFY_JOB, **VERIFY_PARAMS)
def run_verify_job(ctx: registry.JobContext, params: dict) -> dict:
    """Verify every checksum of one session (or the database); problems are in the result."""
    return verify.verify_integrity(ctx.engine, params["session_id"], heartbeat=ctx.heartbeat).to_dict()
