"""Run the ``trainsrv`` command in this process and capture everything it writes."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import signal
from pathlib import Path

from app import cli, cli_common, config

# Argument types that take any text: their values are refused by meaning, not by parsing.
PLAIN_TYPES = (None, str, Path, cli_common.non_empty)


def run_cli(*argv: str) -> tuple[int, str, str, str]:
    """``trainsrv ARGV``: (exit code, stdout, stderr, log records as text, at DEBUG level).

    Log records are captured by a handler on the root logger, so a message that any logger
    (ours, SQLAlchemy's, psycopg's) emits while the command runs is seen here."""
    config.set_settings(None)
    out, err, logs = io.StringIO(), io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(logs)
    root = logging.getLogger()
    previous_level, previous_term = root.level, signal.getsignal(signal.SIGTERM)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        signal.signal(signal.SIGTERM, previous_term)
        config.set_settings(None)
    return code, out.getvalue(), err.getvalue(), logs.getvalue()


def error_line(stderr: str) -> str:
    """The one error line of a failed command (usage lines from argparse may precede it)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


def leaves(parser: argparse.ArgumentParser, prefix=()):
    """Every leaf command of ``parser``: (its path of subcommand names, its parser)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaves(child, (*prefix, name))


def required_args(parser: argparse.ArgumentParser, skip: argparse.Action | None = None) -> list[str]:
    """Values for the leaf's required arguments, so that only the argument under test is wrong."""
    argv: list[str] = []
    for action in parser._actions:
        if action is skip or not (action.required or not action.option_strings):
            continue
        value = {"revision": "head", "kind": "noop", "file": "candles.csv", "out": "report-dir", "timeframe": "1m"}.get(
            action.dest, "BTC-PERP" if action.type in PLAIN_TYPES else "1"
        )
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            value = next(iter(action.choices))
        argv += [action.option_strings[0], value] if action.option_strings else [value]
    return argv
