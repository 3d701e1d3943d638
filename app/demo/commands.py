"""``trainsrv demo``: the main job on the configured (by default the embedded) database."""

from __future__ import annotations

import json
from pathlib import Path

from app import cli_common, logs
from app.errors import TrainsrvError


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline end to end on a real or simulated market")
    p.add_argument(
        "--candles",
        type=Path,
        help="CSV of 1-minute candles (timestamp,open,high,low,close,volume); default: a simulated market",
    )
    p.add_argument("--symbol", help="symbol to store the market under (default BTC-PERP with --candles, else SIM)")
    p.add_argument(
        "--timeframe",
        default="1m",
        help="bar length of --candles (default 1m; the file is checked: other bar lengths are refused "
        "with the reason, as the outcome and event timeframes are global settings)",
    )
    p.add_argument("--days", type=_positive(float), default=10.0, help="days of decisions to replay (default 10)")
    p.add_argument("--every-min", type=_positive(int), default=15, help="minutes between decisions (default 15)")
    p.add_argument("--horizon-s", type=_positive(int), default=1800, help="prediction horizon (default 1800)")
    p.add_argument("--cnn-epochs", type=_positive(int), default=3)
    p.add_argument("--rl-steps", type=_positive(int), default=150)
    p.add_argument(
        "--cycle-pct",
        type=_at_least(float, 0.0),
        default=1.0,
        help="a learnable price cycle in the simulated market, in percent (default 1; 0: pure random walk, "
        "where no model beats the baselines)",
    )
    p.add_argument("--seed", type=_at_least(int, 0), default=0)
    p.add_argument(
        "--stream-s",
        type=_positive(float),
        default=60.0,
        help="wall-clock seconds the market takes to stream (default 60; sets the accelerated clock)",
    )
    p.add_argument("--json", action="store_true", help="print a machine-readable summary only")
    p.set_defaults(func=_demo)


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not 0 < value < float("inf"):  # also refuses nan
            raise ValueError(text)
        return value

    parse.__name__ = kind.__name__
    return parse


def _at_least(kind, low):
    def parse(text: str):
        value = kind(text)
        if value < low:
            raise ValueError(text)
        return value

    parse.__name__ = kind.__name__
    return parse


def _demo(args) -> int:
    from app.demo.run import DemoOptions, run_demo

    if args.candles is not None and not args.candles.is_file():
        raise TrainsrvError(f"--candles: no such file: {args.candles}")
    engine = cli_common.open_db(require_head=False)
    from app.db import migrate

    migrate.upgrade(engine)  # a fresh data dir is migrated on the spot; an up-to-date one is untouched
    opts = DemoOptions(
        candles=args.candles,
        symbol=args.symbol,
        timeframe=args.timeframe,
        days=args.days,
        every_min=args.every_min,
        horizon_s=args.horizon_s,
        cnn_epochs=args.cnn_epochs,
        rl_steps=args.rl_steps,
        seed=args.seed,
        progress=not args.json and logs.show_progress(),
        stream_s=args.stream_s,
        cycle_pct=args.cycle_pct,
    )
    summary = run_demo(engine, engine.url.render_as_string(hide_password=False), opts)
    if args.json:
        print(json.dumps(summary, default=str, indent=2))
    else:
        _print(summary)
    return 0


def _print(s: dict) -> None:
    m, o, st = s["market"], s["orchestrator"], s["stats"]
    print(
        f"\ntrainsrv demo: {s['symbol']} ({m['source']}), {m['bars']} one-minute bars "
        f"{m['first_ts']:%Y-%m-%d} .. {m['last_ts']:%Y-%m-%d}, {s['elapsed_s']} s"
    )
    print(
        f"  orchestrator   streamed {o['candles']} bars in {o['elapsed_s']} s: {o['packages']} packages "
        f"({o['invalid_packages']} invalid, kept for audit), {o['predictions']} predictions"
    )
    print(
        f"  outcomes       {st['validated_outcomes']} validated, {st['pending_outcomes']} pending, "
        f"profitable share {_pct(st['profitable_share'])}"
    )
    print(f"  events         {st['market_events']} rapid-change events, {st['premium_packages']} premium packages")
    print(f"  experiences    {st['experiences']} ({st['profitable_experiences']} profitable)")
    print("\nThe loop, scheduled by `trainsrv serve` (seconds after the demo started):")
    for stage in s["stages"]:
        did = ", ".join(f"{k} {v}" for k, v in stage["did"].items() if v) or "-"
        sessions = f", sessions {stage['sessions']}" if stage["sessions"] else ""
        print(
            f"  {stage['stage']:<18} {stage['runs']:>4} runs  {stage['first_s']:>7.1f} .. {stage['last_s']:>7.1f} s  "
            f"busy {stage['busy_s']:>6.1f} s  {did}{sessions}"
        )
    print()
    for sess in s["sessions"]:
        print(
            f"  session {sess['session_id']:<5}  {sess['model_kind']}: {sess['steps']} steps, final loss "
            f"{_num(sess['final_loss_raw'])} (smoothed {_num(sess['final_loss_smoothed'])}), "
            f"training value {_num(sess['training_value'])}, "
            f"{(sess['gradient_bytes'] or 0) / 1e6:.1f} MB of gradients, {sess['checkpoints']} checkpoints"
        )
    replay = s["jobs"]["replay_session"]["result"]
    verify = s["jobs"]["verify_integrity"]["result"]
    print(
        f"  audit          session {replay.get('session_id')} replayed: exact={replay.get('exact')}, "
        f"{len(replay.get('checks', []))} checkpoints matched bit for bit; integrity problems: "
        f"{len(verify.get('problems', []))}"
    )
    _print_models(s["models"])
    print("\nNext, as an analyst: paste this to query the same database as trainsrv_analyst")
    print(f"\n  {s['analyst_command']}\n")
    print("or open psql on it (`trainsrv sql`; `trainsrv db start` keeps the server up for Grafana) and try:\n")
    for sql in s["analyst_sql"][1:]:
        print(sql + "\n")


def _print_models(m: dict) -> None:
    decided = ", ".join(f"{d['model_kind']} {d['symbol']}: {d['decisions']} {d['action']}" for d in m["decisions"])
    print(f"\nModels (docs/models.md): {decided or 'no gate decision'}")
    for r in m["refusal_reasons"]:
        print(f"  refused        {r['model_kind']} x{r['refusals']}: {r['reason']}")
    if not m["deployed"]:
        print("  deployed       none: no candidate beat the baselines on its later slice")
    for d in m["deployed"]:
        edge = None if d["eval_accuracy"] is None else d["eval_accuracy"] - d["eval_baseline_accuracy"]
        print(
            f"  deployed       {d['version']} ({d['model_kind']} {d['symbol']}, since {d['deployed_at']:%H:%M:%S}): "
            f"offline accuracy - baseline {_signed(edge)}, profit/call {_signed(d['eval_mean_profit_per_call'])}"
        )
    for r in m["live"]:
        print(
            f"  live           {r['version']:<10} {r['action']:<8} {r['predictions']:>4} calls made, "
            f"{r['validated']:>4} validated, profit/call {_signed(r['live_profit_per_call'])} live vs "
            f"{_signed(r['offline_profit_per_call'])} offline, hit rate {_pct(r['live_hit_rate'])}"
            f"{'  (current)' if r['is_current'] else ''}"
        )


def _signed(x) -> str:
    return "-" if x is None else f"{x:+.4f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"
