"""``trainsrv ingest ...``: bulk loading for ops (candles from CSV files)."""

from __future__ import annotations

import json

from app import cli_common, logs

GAPS_SHOWN = 10


def register(sub) -> None:
    ingest = sub.add_parser("ingest", help="load market data").add_subparsers(dest="ingest_command", required=True)
    p = ingest.add_parser("candles", help="load a timestamp,open,high,low,close,volume CSV (idempotent)")
    p.add_argument("file", help="CSV file with header timestamp,open,high,low,close,volume")
    p.add_argument("--symbol", required=True, help="e.g. BTC-PERP")
    p.add_argument("--timeframe", required=True, help="bar length of the file, e.g. 1m")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=_candles)


def _candles(args) -> int:
    from app.ingest.candles import ingest_candles  # numpy and the CSV machinery: only when loading

    engine = cli_common.open_db()
    report = ingest_candles(
        engine,
        args.file,
        args.symbol,
        args.timeframe,
        progress=False if args.no_progress or not logs.show_progress() else None,
    )
    if args.json:
        print(json.dumps(report.to_dict(), default=str, indent=2))
    else:
        print(_summary(report))
    return 0


def _summary(r) -> str:
    lines = [
        f"{r.symbol} {r.timeframe}: read {r.rows_read} rows in {r.elapsed_s:.2f}s",
        f"  loaded      {r.loaded}",
        f"  duplicates  {r.duplicates} (already stored or repeated; {r.conflicts} with different values, "
        "stored values kept)",
        f"  rejected    {r.rejected}",
    ]
    for reason, n in sorted(r.reject_reasons.items()):
        lines.append(f"    {reason}: {n} (lines {', '.join(map(str, r.reject_lines.get(reason, [])))})")
    span = f" between {r.first_ts} and {r.last_ts}" if r.first_ts else ""
    lines.append(f"  gaps        {len(r.gaps)} ({r.missing_bars} missing bars){span}")
    for g in r.gaps[:GAPS_SHOWN]:
        lines.append(f"    after {g.after_ts}: {g.missing_bars} missing, next bar {g.before_ts}")
    if len(r.gaps) > GAPS_SHOWN:
        lines.append(f"    ... and {len(r.gaps) - GAPS_SHOWN} more (use --json)")
    return "\n".join(lines)
