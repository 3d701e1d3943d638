"""``trainsrv validate``: label every prediction whose horizon has passed, now."""

from __future__ import annotations

import datetime as dt
import json

from app import cli_common
from app.config import get_settings
from app.errors import ValidationError
from app.outcomes import validate


def register(sub) -> None:
    p = sub.add_parser("validate", help="label predictions whose horizon has passed (outcomes)")
    p.add_argument("--symbol", type=cli_common.non_empty, help="only this symbol")
    p.add_argument(
        "--recheck",
        action="store_true",
        help="recompute validated outcomes too (e.g. after changing fee_rate / slippage_rate)",
    )
    p.add_argument("--as-of", dest="as_of", help="label as if it were this ISO time (UTC if no offset)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_validate)


def _validate(args) -> int:
    engine = cli_common.open_db()
    result = validate.validate_outcomes(
        engine, get_settings(), symbol=args.symbol, recheck=args.recheck, as_of=_parse_time(args.as_of)
    )
    with engine.connect() as conn:
        totals = validate.summary(conn)
    if args.json:
        print(json.dumps({"run": result.as_dict(), "outcomes": totals}))
        return 0
    print(
        f"examined {result.considered}: {result.validated} newly validated, {result.relabelled} relabelled, "
        f"{result.pending_new + result.pending_changed} pending (new or changed reason)"
    )
    print(
        f"outcomes: {totals['validated']} validated ({totals['profitable']} profitable, "
        f"{totals['revised']} revised), {totals['pending']} pending"
    )
    return 0


def _parse_time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError("--as-of", f"must be an ISO time like 2022-01-31T12:00:00Z, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
