"""``trainsrv train cnn|rl|resume``: train inline or enqueue as a job, resume sessions.

The options of ``train cnn`` and ``train rl`` are the parameter tables of the ``train_cnn`` and
``train_rl`` job kinds (``app.trainer.jobs``), so a command and its queued job run the same code."""

from __future__ import annotations

from app import cli_common
from app.errors import ValidationError
from app.registry import jobs as registry_jobs
from app.trainer import jobs


def register(sub) -> None:
    p = sub.add_parser("train", help="train models (inline or as a job) and resume sessions")
    train_sub = p.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    cnn = train_sub.add_parser("cnn", help="train the CNN on a symbol's most profitable episodes")
    cli_common.add_param_arguments(cnn, jobs.CNN_JOB, jobs.CNN_PARAMS)
    cnn.set_defaults(func=_train_cnn)
    rl = train_sub.add_parser("rl", help="train the RL agent (double DQN) with profit-weighted prioritized replay")
    cli_common.add_param_arguments(rl, jobs.RL_JOB, jobs.RL_PARAMS)
    rl.set_defaults(func=_train_rl)
    r = train_sub.add_parser("resume", help="continue a failed / interrupted / killed session")
    r.add_argument("session_id", type=int)
    r.set_defaults(func=_resume)


def _train_cnn(args) -> int:
    def run(engine, params):
        from app.trainer import cnn_train

        result = cnn_train.train_cnn(engine, jobs.cnn_options(params))
        return registry_jobs.after_training(engine, result, params["promote"], inline=True)

    return cli_common.run_or_enqueue(args, jobs.CNN_JOB, jobs.CNN_PARAMS, run)


def _train_rl(args) -> int:
    def run(engine, params):
        from app.trainer import rl_train

        result = rl_train.train_rl(engine, jobs.rl_options(params))
        return registry_jobs.after_training(engine, result, params["promote"], inline=True)

    return cli_common.run_or_enqueue(args, jobs.RL_JOB, jobs.RL_PARAMS, run)


def _resume(args) -> int:
    from app.recording import sessions
    from app.session_replay import onto
    from app.trainer import cnn_train, rl_train

    engine = cli_common.open_db()
    with engine.connect() as conn:
        row = sessions.get(conn, args.session_id, field="session_id")
    if onto.is_onto_session(row.config):
        cli_common.print_result(onto.resume_onto(engine, args.session_id))
        return 0
    if row.model_kind == rl_train.MODEL_KIND:
        cli_common.print_result(rl_train.resume_rl(engine, args.session_id))
        return 0
    if row.model_kind != cnn_train.MODEL_KIND:
        raise ValidationError(
            "session_id",
            f"session {args.session_id} is a {row.model_kind} session; only cnn and rl training sessions are resumed",
        )
    cli_common.print_result(cnn_train.resume_cnn(engine, args.session_id))
    return 0
