"""``trainsrv replay ...`` and ``trainsrv verify``: the command-line side of the ``replay_session`` and
``verify_integrity`` job kinds (``app.session_replay.jobs``), whose parameter tables are also these
commands' options. ``app.session_replay.exact``, ``onto`` and ``verify`` do the work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app import cli_common
from app.jobs import registry
from app.session_replay.jobs import (
    REPLAY_JOB,
    REPLAY_PARAMS,
    VERIFY_JOB,
    check_combination,
    onto_options,
    replay_options,
)

if TYPE_CHECKING:
    from app.session_replay import exact, verify

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
    from app.session_replay import exact, onto

    raw = {name: getattr(args, name) for name in REPLAY_PARAMS if getattr(args, name) is not None}
    engine = cli_common.open_db()
    if args.enqueue:
        return cli_common.enqueue_and_print(engine, REPLAY_JOB, raw)
    params = registry.get(REPLAY_JOB).validate(raw)
    check_combination(params, set(raw))
    if params["onto"] is not None:
        cli_common.print_result(onto.replay_onto(engine, params["session_id"], params["onto"], onto_options(params)))
        return 0
    report = exact.replay_session(engine, params["session_id"], replay_options(params))
    if args.json:
        cli_common.print_result(report.to_dict())
    else:
        print(summary(report))
    # --verify passes only for the whole session, bit-exact from step 0 (not a part of it).
    return 1 if params["verify"] and not report.verified_whole else 0


def _resume(args) -> int:
    from app.session_replay import onto

    cli_common.print_result(onto.resume_onto(cli_common.open_db(), args.session_id))
    return 0


def _verify(args) -> int:
    from app.session_replay import verify

    engine = cli_common.open_db()
    raw = {} if args.session_id is None else {"session_id": args.session_id}
    if args.enqueue:
        return cli_common.enqueue_and_print(engine, VERIFY_JOB, raw)
    report = verify.verify_integrity(engine, registry.get(VERIFY_JOB).validate(raw)["session_id"])
    if args.json:
        cli_common.print_result(report.to_dict())
    else:
        print(verify_summary(report))
    return 0 if report.ok else 1


def summary(report: exact.ReplayReport) -> str:
    """A few lines a person reads after ``trainsrv replay session``."""
    lines = [
        f"session {report.session_id}: replayed from checkpoint {report.start_checkpoint} to step "
        f"{report.to_step} ({report.steps_applied} steps applied, {report.steps_skipped} skipped) in "
        f"{report.elapsed_s:.2f} s ({report.steps_per_s:.1f} steps/s)"
    ]
    matched = sum(c.matches for c in report.checks)
    if report.exact is None:
        worst = max((c.max_abs_diff or 0.0 for c in report.checks), default=0.0)
        lines.append(
            f"approximate replay: {matched}/{len(report.checks)} checkpoints identical, "
            f"largest parameter difference {worst:.3g}"
        )
    elif report.divergence is None and not report.incomplete:
        lines.append(
            f"bit-exact: {matched}/{len(report.checks)} checkpoints reproduced (parameters and "
            "optimizer state hashes equal)"
        )
    elif report.divergence is None:
        lines.append(
            f"NOT VERIFIED WHOLE: {matched}/{len(report.checks)} checkpoints reproduced, but "
            + "; ".join(report.incomplete)
        )
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
