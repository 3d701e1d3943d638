"""``trainsrv train ...``: train models inline or enqueue them as jobs, resume sessions.

Trainers add their subcommand through a ``register_train(train_subparsers)`` function in a
module listed in ``TRAIN_MODULES``.
"""

from __future__ import annotations

import importlib
import json

from app import cli
from app.errors import ValidationError

TRAIN_MODULES = ["app.trainer.cnn_commands", "app.trainer.rl_commands"]


def register(sub) -> None:
    p = sub.add_parser("train", help="train models (inline or as a job) and resume sessions")
    train_sub = p.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    for name in TRAIN_MODULES:
        importlib.import_module(name).register_train(train_sub)
    r = train_sub.add_parser("resume", help="continue a failed / interrupted / killed session")
    r.add_argument("session_id", type=int)
    r.set_defaults(func=_resume)


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


def shared_params(model: str, optimizer: str) -> dict:
    """The parameters every trainer takes (model, optimizer, capture, checkpoints, seed, device)."""
    from app.jobs import registry
    from app.recording.capture import HALF_CODECS, POLICIES
    from app.recording.optim import OPTIMIZERS

    return {
        "model": registry.Param(str, default=model),
        "model_config": registry.Param(str, default=None),
        "optimizer": registry.Param(str, default=optimizer, choices=OPTIMIZERS),
        "lr": registry.Param(float, default=1e-3, min=1e-12),
        "capture": registry.Param(str, default="full", choices=POLICIES),
        "capture_k": registry.Param(int, default=10, min=1),
        "half_codec": registry.Param(str, default="bf16", choices=HALF_CODECS),
        "checkpoint_every": registry.Param(int, default=50, min=1),
        "seed": registry.Param(int, default=0, min=0),
        "device": registry.Param(str, default="auto"),
        # Warm start (app/registry/warm.py) and the promotion gate after a succeeded session (docs/models.md).
        "init": registry.Param(str, default="deployed"),
        "promote": registry.Param(bool, default=True),
    }


def shared_options(params: dict) -> dict:
    """Keyword arguments of the trainers' options built from the shared parameters (not the optimizer,
    whose spec differs per trainer)."""
    from app.recording.capture import CapturePolicy

    model_config = json_object("model_config")(params["model_config"]) if params.get("model_config") else {}
    return {"model": params["model"], "model_config": model_config,
            "capture": CapturePolicy(params["capture"], params["capture_k"], params["half_codec"]),
            "checkpoint_every": params["checkpoint_every"], "seed": params["seed"], "device": params["device"],
            "init": params["init"]}


def add_param_arguments(parser, kind: str, params: dict) -> None:
    """One ``--flag`` per job parameter (the CLI and the job share one table), plus ``--enqueue``."""
    from app.jobs import registry

    for name, param in params.items():
        required = param.default is registry.REQUIRED
        # Booleans arrive as text (yes / no, true / false) and are parsed by the parameter, as job params are.
        parser.add_argument("--" + name.replace("_", "-"), type=str if param.type is bool else param.type,
                            required=required, default=None,
                            choices=param.choices, help="required" if required else f"default {param.default}")
    parser.add_argument("--enqueue", action="store_true", help=f"queue a {kind} job instead of running now")


def run_or_enqueue(args, kind: str, params: dict, run_inline) -> int:
    """Enqueue ``kind`` with the given CLI options, or validate them and ``run_inline(params)`` now."""
    from app.jobs import registry

    raw = {name: getattr(args, name) for name in params if getattr(args, name) is not None}
    engine = cli.open_db()
    if args.enqueue:
        return enqueue_and_print(engine, kind, raw)
    from app.registry import jobs as registry_jobs

    params = registry.get(kind).validate(raw)
    print_result(registry_jobs.after_training(engine, run_inline(engine, params), params["promote"], inline=True))
    return 0


def enqueue_and_print(engine, kind: str, raw: dict) -> int:
    """Queue a ``kind`` job with ``raw`` parameters (validated first) and print its id."""
    from app.jobs import queue

    with engine.begin() as conn:
        job = queue.enqueue(conn, kind, raw)
    print_result({"job_id": job.id, "created": job.created})
    return 0


def _resume(args) -> int:
    from app.recording import sessions
    from app.session_replay import onto
    from app.trainer import cnn_train

    engine = cli.open_db()
    with engine.connect() as conn:
        row = sessions.get(conn, args.session_id)
    if onto.is_onto_session(row.config):
        print_result(onto.resume_onto(engine, args.session_id))
        return 0
    if row.model_kind != cnn_train.MODEL_KIND:
        raise ValidationError("session_id", f"session {args.session_id} is a {row.model_kind} session; RL sessions "
                                            "are not resumed (a retried train_rl job starts a fresh session)")
    print_result(cnn_train.resume_cnn(engine, args.session_id))
    return 0
