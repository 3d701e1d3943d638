"""``trainsrv events detect|list``: rapid price-change events."""

from __future__ import annotations

import json

from app import cli_common
from app.config import get_settings


def register(sub) -> None:
    events = sub.add_parser("events", help="rapid price-change events").add_subparsers(
        dest="events_command", required=True
    )
    run = events.add_parser("detect", help="detect velocity / volatility-spike events in the candles")
    run.add_argument("--symbol", type=cli_common.non_empty, help="only this symbol")
    run.add_argument("--json", action="store_true", help="machine-readable output")
    run.set_defaults(func=_detect)
    show = events.add_parser("list", help="the strongest stored events of each kind")
    show.add_argument("--symbol", type=cli_common.non_empty, help="only this symbol")
    show.add_argument("--limit", type=cli_common.positive_int, default=5, help="events per kind (default 5)")
    show.set_defaults(func=_list)


def _detect(args) -> int:
    from app.events import detect  # numpy: only when detecting

    counts = detect.detect_events(cli_common.open_db(), get_settings(), symbol=args.symbol)
    if args.json:
        print(json.dumps(counts))
        return 0
    print(
        f"found {counts['found']} events ({counts['velocity']} velocity, {counts['volatility_spike']} "
        f"volatility spikes): {counts['inserted']} new, {counts['updated']} updated, {counts['deleted']} removed; "
        f"{counts['premium_marked']} packages marked premium"
    )
    return 0


def _list(args) -> int:
    from app.events import detect

    with cli_common.open_db().connect() as conn:
        rows = detect.largest(conn, args.symbol, args.limit)
    for r in rows:
        print(
            f"{r['kind']:<17} {r['symbol']:<12} {r['started_at']:%Y-%m-%d %H:%M} .. {r['ended_at']:%H:%M}  "
            f"magnitude {r['magnitude']:.3f}  direction {r['direction']:+d}"
        )
    return 0
