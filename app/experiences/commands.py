"""``trainsrv experiences build``: RL transitions from validated predictions."""

from __future__ import annotations

import json

from app import cli_common
from app.config import get_settings
from app.db import models
from app.experiences.build import build_experiences


def register(sub) -> None:
    exp = sub.add_parser("experiences", help="RL experiences").add_subparsers(dest="experiences_command", required=True)
    build = exp.add_parser("build", help="build transitions from validated predictions")
    build.add_argument("--symbol", type=cli_common.non_empty, help="only this symbol")
    build.add_argument(
        "--model-kind",
        dest="model_kind",
        default="rl",
        choices=models.MODEL_KINDS,
        help="whose predictions (default rl)",
    )
    build.add_argument("--json", action="store_true", help="machine-readable output")
    build.set_defaults(func=_build)


def _build(args) -> int:
    counts = build_experiences(cli_common.open_db(), get_settings(), symbol=args.symbol, model_kind=args.model_kind)
    print(json.dumps(counts) if args.json else f"experiences: {counts['inserted']} new, {counts['updated']} refreshed")
    return 0
