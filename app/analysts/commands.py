"""``trainsrv similar`` and ``trainsrv report``."""

from __future__ import annotations

import json
from pathlib import Path

from app import cli_common
from app.analysts import sessions
from app.errors import ValidationError


def register(sub) -> None:
    p = sub.add_parser("similar", help="the k most similar past setups of a package, with outcomes")
    p.add_argument("package_id", type=int)
    p.add_argument("-k", type=int, default=10, help="how many neighbours (1..1000)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_similar)
    r = sub.add_parser("report", help="PNG plots and an HTML page for one training session")
    r.add_argument("session_id", type=int)
    r.add_argument("--out", type=Path, required=True, help="output folder (created)")
    r.set_defaults(func=_report)
    sessions.register(sub)


def _similar(args) -> int:
    from app.analysts.similar import similar_setups

    with cli_common.open_db().connect() as conn:
        rows, summary = similar_setups(conn, args.package_id, args.k)
    if args.json:
        print(json.dumps({"neighbours": rows, "summary": summary}, default=str, indent=2))
        return 0
    print(f"{'package':>10} {'ts':<26} {'distance':>9} {'outcomes':>8} {'win rate':>8} {'mean profit':>12}")
    for r in rows:
        win = "-" if r["win_rate"] is None else f"{r['win_rate']:.2f}"
        profit = "-" if r["mean_profit"] is None else f"{r['mean_profit']:+.5f}"
        print(
            f"{r['package_id']:>10} {str(r['ts']):<26} {r['distance']:>9.4f} {r['validated_outcomes']:>8} "
            f"{win:>8} {profit:>12}"
        )
    win = "-" if summary["win_rate"] is None else f"{summary['win_rate']:.2f}"
    profit = "-" if summary["mean_profit"] is None else f"{summary['mean_profit']:+.5f}"
    print(
        f"\n{summary['neighbours']} neighbours, {summary['validated_outcomes']} validated outcomes, "
        f"win rate {win}, mean profit {profit}"
    )
    return 0


def _report(args) -> int:
    from app.analysts.report import write_report

    with cli_common.open_db().connect() as conn:
        try:
            index = write_report(conn, args.session_id, args.out)
        except OSError as exc:  # an unwritable or impossible --out
            raise ValidationError("--out", f"cannot write the report to {args.out}: {exc.strerror or exc}") from None
    print(f"report written to {index}")
    return 0
