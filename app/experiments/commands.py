"""``trainsrv experiment walk-forward | report | list`` and ``trainsrv audit`` (docs/evidence.md)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from app import cli_common as cli
from app.errors import TrainsrvError


def register(sub) -> None:
    p = sub.add_parser("experiment", help="walk-forward experiments: which replay policy makes better models")
    ex = p.add_subparsers(dest="experiment_command", required=True, metavar="SUBCOMMAND")
    w = ex.add_parser(
        "walk-forward",
        help="run arms x seeds through the loop, round by round, and score each round's model on the next window",
    )
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument("--candles", type=Path, help="CSV of 1-minute candles (timestamp,open,high,low,close,volume)")
    src.add_argument("--simulated", action="store_true", help="the simulated market (app/demo/market.py)")
    w.add_argument(
        "--symbol", type=cli.non_empty, help="symbol in the lanes (default BTC-PERP with --candles, else SIM)"
    )
    w.add_argument("--bars", type=cli.positive_int, help="use the first N bars (simulated: how many; default 44640)")
    w.add_argument("--market-seed", type=int, default=7, help="simulated market seed (default 7)")
    from app.experiments.walkforward import CNN_ARMS, RL_ARMS, Options

    d = Options()
    w.add_argument(
        "--every-min",
        type=cli.positive_int,
        default=d.every_min,
        help=f"minutes between decisions (default {d.every_min})",
    )
    w.add_argument(
        "--horizon-s", type=cli.positive_int, default=d.horizon_s, help=f"prediction horizon (default {d.horizon_s})"
    )
    w.add_argument(
        "--warmup-days",
        type=float,
        default=d.warmup_days,
        help=f"days of reference-rule calls before the first model (default {d.warmup_days})",
    )
    w.add_argument(
        "--rounds", type=cli.positive_int, default=d.rounds, help=f"rounds after the warm-up (default {d.rounds})"
    )
    w.add_argument("--seeds", type=cli.positive_int, default=d.seeds, help=f"seeds per arm (default {d.seeds})")
    w.add_argument(
        "--cnn-arms", default=",".join(d.cnn_arms), help=f"comma-separated of {', '.join(CNN_ARMS)} ('' for none)"
    )
    w.add_argument(
        "--rl-arms", default=",".join(d.rl_arms), help=f"comma-separated of {', '.join(RL_ARMS)} ('' for none)"
    )
    w.add_argument(
        "--epochs", type=cli.positive_int, default=d.epochs, help=f"CNN epochs per round (default {d.epochs})"
    )
    w.add_argument(
        "--rl-steps", type=cli.positive_int, default=d.rl_steps, help=f"RL steps per round (default {d.rl_steps})"
    )
    w.add_argument("--out", type=Path, help="write the report (markdown + plots) here")
    w.add_argument("--keep-lanes", action="store_true", help="keep each lane's database for inspection")
    w.set_defaults(func=_walk_forward)
    r = ex.add_parser("report", help="write the report of a stored experiment")
    r.add_argument("experiment_id", type=cli.positive_int)
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(func=_report)
    ls = ex.add_parser("list", help="stored experiments, newest first")
    ls.add_argument("--limit", type=cli.positive_int, default=20)
    ls.set_defaults(func=_list)
    a = sub.add_parser("audit", help="the leakage audit (v_leakage_audit): exits 1 when it finds look-ahead")
    a.add_argument("--limit", type=cli.positive_int, default=50)
    a.set_defaults(func=_audit)


def _arms(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


def _walk_forward(args) -> int:
    from app.experiments import series, walkforward

    if args.candles is not None and not args.candles.is_file():
        raise TrainsrvError(f"--candles: no such file: {args.candles}")
    opts = walkforward.Options(
        every_min=args.every_min,
        horizon_s=args.horizon_s,
        warmup_days=args.warmup_days,
        rounds=args.rounds,
        seeds=args.seeds,
        cnn_arms=_arms(args.cnn_arms),
        rl_arms=_arms(args.rl_arms),
        epochs=args.epochs,
        rl_steps=args.rl_steps,
        keep_lanes=args.keep_lanes,
    )
    try:
        opts.validate()
        if args.candles is not None:
            market = series.from_file(args.candles, args.symbol or "BTC-PERP", args.bars)
        else:
            market = series.simulated(args.symbol or "SIM", args.bars or 44_640, args.market_seed)
    except ValueError as exc:
        raise TrainsrvError(str(exc)) from None
    logging.getLogger("app").setLevel(logging.WARNING)  # one progress line per lane window instead of job logs
    engine = cli.open_db()
    exp_id = walkforward.run(engine, market, opts)
    summary = walkforward.summarise(engine, exp_id)
    if args.out:
        _write_report(engine, exp_id, args.out)
    print(json.dumps({"experiment_id": exp_id, **summary}, default=str, indent=2))
    return 0


def _write_report(engine, exp_id: int, out: Path) -> None:
    from app.db import queries
    from app.experiments import report, walkforward

    with engine.connect() as conn:
        row = conn.execute(queries.get("experiments.get"), {"id": exp_id}).mappings().first()
    if row is None:
        raise TrainsrvError(f"no experiment {exp_id}")
    paths = report.write(dict(row), walkforward.results(engine, exp_id), out)
    print(f"report: {', '.join(map(str, paths))}", file=sys.stderr)


def _report(args) -> int:
    _write_report(cli.open_db(), args.experiment_id, args.out)
    return 0


def _list(args) -> int:
    from app.db import queries

    with cli.open_db().connect() as conn:
        for r in conn.execute(queries.get("experiments.list"), {"limit": args.limit}).mappings():
            print(
                f"{r['id']:>5}  {r['status']:<9}  {r['symbol']:<10}  {r['series']}"
                f"  started {r['started_at']:%Y-%m-%d %H:%M}  took {r['took'] or '-'}"
            )
    return 0


def _audit(args) -> int:
    from app.db import queries

    with cli.open_db().connect() as conn:
        total = conn.execute(queries.get("experiments.leakage_count")).scalar_one()
        rows = conn.execute(queries.get("experiments.leakage"), {"limit": args.limit}).mappings().all()
    for r in rows:
        print(f"{r['check_name']:<30} session {r['session_id'] or '-':<6} item {r['item_id']:<8} {r['detail']}")
    print(f"leakage audit: {total} row(s)" + ("" if total else " — no look-ahead found"))
    return 1 if total else 0
