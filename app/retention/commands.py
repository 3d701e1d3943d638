"""``trainsrv gc [--dry-run]`` and ``trainsrv keep SESSION [--off]`` (retention, docs/retention.md).

Torch-free: nothing here imports a trainer.
"""

from __future__ import annotations

import json

from app import cli_common
from app.config import get_settings
from app.errors import ValidationError
from app.recording import sessions
from app.retention import gc, policy

GC_JOB = "gc"
MB = 1 << 20


def register(sub) -> None:
    p = sub.add_parser("gc", help="prune gradients / checkpoints by the retention settings (docs/retention.md)")
    p.add_argument("--dry-run", action="store_true", help="show what would be pruned, change nothing")
    p.add_argument("--enqueue", action="store_true", help=f"queue a {GC_JOB} job instead of running now")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_gc)
    k = sub.add_parser("keep", help="mark a session keep: retention never prunes it nor its lineage")
    k.add_argument("session_id", type=cli_common.positive_int)
    k.add_argument("--off", action="store_true", help="clear the mark instead")
    k.set_defaults(func=_keep)


def _gc(args) -> int:
    engine = cli_common.open_db()
    if args.enqueue:
        return cli_common.enqueue_and_print(engine, GC_JOB, {"dry_run": args.dry_run})
    settings = get_settings()
    report = gc.run_gc(
        engine, policy.Policy.from_settings(settings), dry_run=args.dry_run, lock_timeout_s=settings.gc_lock_timeout_s
    )
    print(json.dumps(report.to_dict(), default=str, indent=2) if args.json else summary(report))
    return 0


def _keep(args) -> int:
    with cli_common.open_db().begin() as conn:
        row = sessions.set_keep(conn, args.session_id, not args.off)
    if row is None:
        raise ValidationError("session", f"no training session with id {args.session_id}")
    state = "marked keep" if row.keep else "no longer marked keep"
    note = (
        f" (its {'gradients' if row.pruned == 'gradients' else 'gradients and checkpoints'} were pruned already)"
        if row.pruned
        else ""
    )
    print(f"session {row.id}: {state}{note}")
    return 0


def summary(report: gc.GcReport) -> str:
    """What a person reads after ``trainsrv gc``."""
    verb = "would prune" if report.dry_run else "pruned"
    done = [p for p in report.pruned if p.skipped is None]
    lines = [
        f"gc{' (dry run)' if report.dry_run else ''}: {verb} {len(done)} session(s), "
        f"{sum(p.freed_bytes for p in done) / MB:.1f} MB"
    ]
    for p in report.pruned:
        what = "gradients" if p.action == "gradients" else "gradients and checkpoints"
        tail = f"skipped ({p.skipped})" if p.skipped else f"{p.freed_bytes / MB:.1f} MB"
        lines.append(f"  session {p.session_id}: {what}: {p.reason}: {tail}")
    lines.append(storage_lines(report.by_class, report.gradient_bytes_after, report.budget_bytes))
    return "\n".join(lines)


def storage_lines(by_class: dict[str, dict], gradient_bytes: int, budget_bytes: int) -> str:
    """Sessions and bytes per retention class, then the gradient budget's headroom."""
    lines = [f"{'session class':<20} {'sessions':>9} {'gradient MB':>12} {'checkpoint MB':>14}"]
    for name, c in sorted(by_class.items()):
        lines.append(
            f"{name:<20} {c['sessions']:>9} {c['gradient_bytes'] / MB:>12.1f} {c['checkpoint_bytes'] / MB:>14.1f}"
        )
    if budget_bytes > 0:
        lines.append(
            f"gradient budget: {gradient_bytes / MB:.1f} MB of {budget_bytes / MB:.0f} MB used, "
            f"headroom {(budget_bytes - gradient_bytes) / MB:.1f} MB"
        )
    else:
        lines.append(f"gradient budget: none set (TRAINSRV_GRADIENT_BUDGET_GB); {gradient_bytes / MB:.1f} MB used")
    return "\n".join(lines)
