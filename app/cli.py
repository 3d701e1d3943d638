"""The ``trainsrv`` command line.

Each area contributes its subcommands through ``register(subparsers)`` in its own ``commands``
module, imported below by name; what they share is in ``app.cli_common``. Command modules import
torch and the trainers only inside the commands that run a model, so the others start fast.
Expected failures (``TrainsrvError``) print one line and exit 1; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import sqlalchemy as sa

from app import __version__, logs, stats
from app.analysts import commands as analysts_commands
from app.db import commands as db_commands
from app.demo import commands as demo_commands
from app.errors import DatabaseUnavailable, TrainsrvError
from app.events import commands as events_commands
from app.experiences import commands as experiences_commands
from app.experiments import commands as experiments_commands
from app.ingest import commands as ingest_commands
from app.jobs import commands as jobs_commands
from app.outcomes import commands as outcomes_commands
from app.registry import commands as registry_commands
from app.retention import commands as retention_commands
from app.session_replay import commands as session_replay_commands
from app.trainer import commands as trainer_commands

COMMANDS = (
    db_commands,
    stats,
    analysts_commands,
    demo_commands,
    jobs_commands,
    outcomes_commands,
    events_commands,
    experiences_commands,
    trainer_commands,
    ingest_commands,
    session_replay_commands,
    registry_commands,
    experiments_commands,
    retention_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainsrv", description="Training server for trading models.")
    parser.add_argument("--version", action="version", version=f"trainsrv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def _exit_on_sigterm(signum, frame):
    # Raising SystemExit runs atexit handlers, which release the embedded server.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        logs.configure(args.verbose)
        return args.func(args) or 0
    except BrokenPipeError:
        return _closed_pipe()
    except TrainsrvError as exc:
        print(f"trainsrv: error: {exc}", file=sys.stderr)
        return 1
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(f"trainsrv: error: {DatabaseUnavailable(f'database connection lost: {reason}')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _closed_pipe() -> int:
    # The reader went away (`trainsrv stats --json | head`): end quietly, as cat does, and keep Python from
    # reporting the failed flush of stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
