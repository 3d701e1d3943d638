"""The ``trainsrv`` command line.

Each area contributes its subcommands through a ``register(subparsers)`` function in its own
``commands`` module, listed in ``COMMAND_MODULES``. Expected failures (``TrainsrvError``) print
one line and exit 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

import sqlalchemy as sa

from app import __version__
from app.db import engine as db_engine
from app.db import migrate
from app.errors import DatabaseUnavailable, TrainsrvError

COMMAND_MODULES = [
    "app.db.commands",
    "app.stats",
    "app.analysts.commands",
    "app.demo.commands",
    "app.jobs.commands",
    "app.outcomes.commands",
    "app.events.commands",
    "app.experiences.commands",
    "app.trainer.commands",
    "app.ingest.commands",
    "app.session_replay.commands",
    "app.registry.commands",
    "app.experiments.commands",
]


def open_db(require_head: bool = True) -> sa.Engine:
    """The configured engine, checked reachable (and at the migration head unless told not to)."""
    engine = db_engine.get_engine()
    db_engine.check_connection(engine)
    if require_head:
        migrate.require_head(engine)
    return engine


def non_empty(text: str) -> str:
    """An argparse ``type`` for names such as ``--symbol``: a blank value is refused, not read as "all"."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts and limits (>= 1)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainsrv", description="Training server for trading models.")
    parser.add_argument("--version", action="version", version=f"trainsrv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _exit_on_sigterm(signum, frame):
    # Raising SystemExit runs atexit handlers, which release the embedded server.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("app").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return args.func(args) or 0
    except TrainsrvError as exc:
        print(f"trainsrv: error: {exc}", file=sys.stderr)
        return 1
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(f"trainsrv: error: {DatabaseUnavailable(f'database connection lost: {reason}')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
