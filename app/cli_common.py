"""What the command modules share: the database to work on, argument types, and the plumbing that
turns a job kind's parameter table into CLI options (so a command and its queued job validate
and run the same way)."""

from __future__ import annotations

import argparse
import json

import sqlalchemy as sa

from app.db import engine as db_engine
from app.errors import ValidationError


def open_db(require_head: bool = True) -> sa.Engine:
    """The configured engine, checked reachable (and at the migration head unless told not to)."""
    engine = db_engine.get_engine()
    db_engine.check_connection(engine)
    if require_head:
        from app.db import migrate  # alembic: only for commands that open the database

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


def json_object(field: str):
    """A parser of JSON object text; errors are ValidationErrors naming ``field``."""

    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(field, f"not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ValidationError(field, "must be a JSON object")
        return value

    return parse


def print_result(result: dict) -> None:
    print(json.dumps(result, default=str, indent=2))


def add_param_arguments(parser, kind: str, params: dict) -> None:
    """One ``--flag`` per job parameter (the CLI and the job share one table), plus ``--enqueue``."""
    from app.jobs import registry

    for name, param in params.items():
        required = param.default is registry.REQUIRED
        # Booleans arrive as text (yes / no, true / false) and are parsed by the parameter, as job params are.
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=str if param.type is bool else param.type,
            required=required,
            default=None,
            choices=param.choices,
            help="required" if required else f"default {param.default}",
        )
    parser.add_argument("--enqueue", action="store_true", help=f"queue a {kind} job instead of running now")


def run_or_enqueue(args, kind: str, params: dict, run_inline) -> int:
    """Enqueue ``kind`` with the given CLI options, or validate them and ``run_inline(engine, params)`` now."""
    from app.jobs import registry

    raw = {name: getattr(args, name) for name in params if getattr(args, name) is not None}
    engine = open_db()
    if args.enqueue:
        return enqueue_and_print(engine, kind, raw)
    params = registry.get(kind).validate(raw)
    result = run_inline(engine, params)
    if "promote" in params:  # training: the promotion gate runs inline (docs/models.md)
        from app.registry import jobs as registry_jobs

        result = registry_jobs.after_training(engine, result, params["promote"], inline=True)
    print_result(result)
    return 0


def enqueue_and_print(engine: sa.Engine, kind: str, raw: dict) -> int:
    """Queue a ``kind`` job with ``raw`` parameters (validated first) and print its id."""
    from app.jobs import queue

    with engine.begin() as conn:
        job = queue.enqueue(conn, kind, raw)
    print_result({"job_id": job.id, "created": job.created})
    return 0
