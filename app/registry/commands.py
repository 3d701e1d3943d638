"""``trainsrv models list | show | promote | rollback | export | live`` (docs/models.md).

Torch is imported only by the commands that build a model (promote, export).
"""

from __future__ import annotations

from pathlib import Path

from app import cli_common
from app.registry import lineage, store


def register(sub) -> None:
    p = sub.add_parser("models", help="the model registry: candidates, deployments, promotion gate, export")
    m = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ls = m.add_parser("list", help="registry models (succeeded sessions), newest first, with deployment status")
    ls.add_argument("--kind", choices=store.KINDS)
    ls.add_argument("--symbol", type=cli_common.non_empty)
    ls.add_argument("--limit", type=cli_common.positive_int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    show = m.add_parser("show", help="one model: evaluation, lineage, deployment decisions and their evidence")
    show.add_argument("session_id", type=int)
    show.set_defaults(func=_show)
    pr = m.add_parser("promote", help="run the promotion gate on a model (by hand)")
    pr.add_argument("session_id", type=int)
    pr.add_argument("--force", action="store_true", help="promote even if checks fail (the checks are recorded)")
    pr.set_defaults(func=_promote)
    rb = m.add_parser("rollback", help="deploy the previous model of a kind and symbol again")
    rb.add_argument("kind", choices=store.KINDS)
    rb.add_argument("symbol", type=cli_common.non_empty)
    rb.add_argument("--to", type=int, help="the session to deploy (default: the previously promoted one)")
    rb.add_argument("--reason", default="", help="why (recorded)")
    rb.set_defaults(func=_rollback)
    ex = m.add_parser("export", help="write a model as state_dict + spec.json (+ TorchScript) for any language")
    ex.add_argument("session_id", type=int, nargs="?", help="the model (default: --deployed KIND SYMBOL)")
    ex.add_argument("--deployed", nargs=2, metavar=("KIND", "SYMBOL"), help="the deployed model of KIND SYMBOL")
    ex.add_argument("--out", type=Path, required=True, help="output folder (created)")
    ex.set_defaults(func=_export)
    lv = m.add_parser("live", help="deployed versions' realised results next to the offline evaluation")
    lv.add_argument("--kind", choices=store.KINDS)
    lv.add_argument("--symbol", type=cli_common.non_empty)
    lv.set_defaults(func=_live)


def _num(value, fmt: str = "+.5f") -> str:
    return "-" if value is None else format(value, fmt)


def _list(args) -> int:
    with cli_common.open_db(require_head=True).connect() as conn:
        rows = store.models_list(conn, args.kind, args.symbol, args.limit)
    if args.json:
        cli_common.print_result(rows)
        return 0
    print(
        f"{'version':<14} {'kind':<4} {'symbol':<12} {'from':>6} {'eval':>5} {'acc-base':>8} {'profit/call':>12} "
        f"{'best const':>11} {'clean':>5} {'value':>7}  deployed"
    )
    for r in rows:
        edge = None if r["eval_accuracy"] is None else r["eval_accuracy"] - r["eval_baseline_accuracy"]
        clean = "-" if r["eval_contaminated"] is None else ("no" if r["eval_contaminated"] else "yes")
        print(
            f"{r['version']:<14} {r['model_kind']:<4} {r['symbol']:<12} {r['init_session_id'] or '-':>6} "
            f"{r['eval_episodes'] or 0:>5} {_num(edge, '+.3f'):>8} {_num(r['eval_mean_profit_per_call']):>12} "
            f"{_num(r['eval_best_constant_profit_per_call']):>11} {clean:>5} {_num(r['training_value'], '.3f'):>7}  "
            f"{r['deployed_at'] if r['is_deployed'] else ''}"
        )
    return 0


def _show(args) -> int:
    with cli_common.open_db().connect() as conn:
        entry = store.model(conn, args.session_id)
        cli_common.print_result(
            {
                "model": entry,
                "lineage": lineage.lineage(conn, args.session_id),
                "decisions": store.decisions(conn, args.session_id),
            }
        )
    return 0


def _promote(args) -> int:
    from app.registry import gate

    decision = gate.run(cli_common.open_db(), args.session_id, source="manual", force=args.force)
    cli_common.print_result(decision.to_dict())
    return 0 if decision.action in ("promote", "none") else 2


def _rollback(args) -> int:
    cli_common.print_result(
        store.rollback(cli_common.open_db(), args.kind, args.symbol, to=args.to, reason=args.reason)
    )
    return 0


def _export(args) -> int:
    from app.errors import ValidationError
    from app.registry import export

    engine = cli_common.open_db()
    session_id = args.session_id
    if args.deployed:
        with engine.connect() as conn:
            row = store.deployed(conn, *args.deployed)
        if row is None:
            raise ValidationError("deployed", f"no {args.deployed[0]} model is deployed for {args.deployed[1]}")
        session_id = row.session_id
    if session_id is None:
        raise ValidationError("session_id", "give a session id or --deployed KIND SYMBOL")
    cli_common.print_result(export.export(engine, session_id, args.out))
    return 0


def _live(args) -> int:
    with cli_common.open_db().connect() as conn:
        cli_common.print_result(store.live_performance(conn, args.kind, args.symbol))
    return 0
