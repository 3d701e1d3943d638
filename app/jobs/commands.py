"""``trainsrv serve`` (the trainer process) and ``trainsrv jobs ...`` (the queue, for ops)."""

from __future__ import annotations

import functools
import json
import signal

from app import cli_common
from app.config import get_settings
from app.errors import ValidationError
from app.jobs import queue, registry, transitions
from app.jobs.lanes import Lanes
from app.jobs.worker import Worker


def register(sub) -> None:
    serve = sub.add_parser("serve", help="run the trainer: claim and run queued jobs until stopped")
    serve.add_argument("--once", action="store_true", help="exit when no job is ready instead of waiting")
    serve.add_argument("--max-jobs", type=cli_common.positive_int, metavar="N", help="exit after running N jobs")
    serve.add_argument("--worker-id", help="name in jobs.locked_by (default: host:pid:random)")
    serve.add_argument("--no-schedule", action="store_true", help="do not enqueue scheduled / threshold jobs")
    serve.add_argument(
        "--single-lane",
        action="store_true",
        help="one slot only: no maintenance lane for light jobs (implied by --once / --max-jobs)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on /metrics and a health check on /health (0: any free port)",
    )
    serve.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")
    serve.set_defaults(func=_serve)

    jobs = sub.add_parser("jobs", help="the job queue").add_subparsers(dest="jobs_command", required=True)
    enqueue = jobs.add_parser("enqueue", help="queue a job of KIND")
    enqueue.add_argument("kind")
    enqueue.add_argument("--param", action="append", default=[], metavar="K=V", help="a job parameter (repeatable)")
    enqueue.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    enqueue.add_argument("--dedupe-key", help="skip when a queued / running job has this key")
    enqueue.add_argument("--max-attempts", type=cli_common.positive_int, help="attempts before the job stays failed")
    enqueue.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="run no sooner than this")
    enqueue.set_defaults(func=_enqueue)

    listing = jobs.add_parser("list", help="newest jobs first, and the queue depth")
    listing.add_argument("--state", help="only jobs in this state")
    listing.add_argument("--kind", help="only jobs of this kind")
    listing.add_argument("--limit", type=cli_common.positive_int, default=50)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)

    show = jobs.add_parser("show", help="every field of one job, as JSON")
    show.add_argument("id", type=int)
    show.set_defaults(func=_show)
    for name, what, func in (
        ("cancel", "cancel a queued or running job", _cancel),
        ("retry", "queue a failed or cancelled job again", _retry),
    ):
        p = jobs.add_parser(name, help=what)
        p.add_argument("id", type=int)
        p.set_defaults(func=func)
    jobs.add_parser("kinds", help="registered job kinds and their parameters").set_defaults(func=_kinds)


# -- serve ------------------------------------------------------------------------------------


def _serve(args) -> int:
    engine = cli_common.open_db()  # refuses a database that is not at the migration head
    transitions.to_stream()
    if args.once or args.max_jobs is not None or args.single_lane:
        worker = Worker(engine, get_settings(), worker_id=args.worker_id, schedule=not args.no_schedule)
        _install_signals(worker)
        run = functools.partial(worker.run, max_jobs=args.max_jobs, once=args.once)
    else:
        trainer = Lanes(engine, get_settings(), worker_id=args.worker_id, schedule=not args.no_schedule)
        _install_signals(trainer)
        run = trainer.run
    server = None
    if args.metrics_port is not None:
        from app import metrics

        server = metrics.serve(engine, args.metrics_port, args.metrics_host)
        transitions.emit("metrics.listening", host=args.metrics_host, port=server.server_address[1])
    try:
        run()
    finally:
        if server is not None:
            server.shutdown()
    return 1 if worker.schema_problem else 0


def _install_signals(worker: Worker | Lanes) -> None:
    def on_signal(signum, frame):
        # First signal: finish (or hand back) the current job, then exit. A second one while a
        # handler runs interrupts it, and the job is released for another trainer.
        if worker.stopping and worker.in_handler:
            raise registry.Interrupted()
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


# -- jobs -------------------------------------------------------------------------------------


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; values stay text (the kind's parameters convert them)."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError("--param", f"must look like NAME=VALUE, got {pair!r}")
        if key in params:
            raise ValidationError(key, "is given twice")
        params[key] = value
    return params


def _enqueue(args) -> int:
    params = parse_params(args.param)
    # Validate before connecting: a typo is reported even when the database is down.
    queue.validate(args.kind, params, args.priority, args.max_attempts, args.dedupe_key, args.delay)
    with cli_common.open_db().begin() as conn:
        job = queue.enqueue(
            conn,
            args.kind,
            params,
            priority=args.priority,
            dedupe_key=args.dedupe_key,
            max_attempts=args.max_attempts,
            delay_s=args.delay,
        )
    if job.created:
        print(f"queued job {job.id} ({args.kind})")
    else:
        print(f"not queued: job {job.id} with dedupe key {args.dedupe_key!r} is already queued or running")
    return 0


def _list(args) -> int:
    with cli_common.open_db().connect() as conn:
        rows = queue.list_jobs(conn, state=args.state, kind=args.kind, limit=args.limit)
        depth = queue.depth(conn)
    if args.json:
        print(json.dumps({"jobs": rows, "depth": depth}, default=str, indent=2))
        return 0
    print(f"{'id':>8} {'kind':<20} {'state':<10} {'prio':>5} {'tries':>5}  {'run_after':<25} last_error")
    for r in rows:
        error = (r["last_error"] or "").splitlines()[0][:60] if r["last_error"] else ""
        tries = f"{r['attempts']}/{r['max_attempts']}"
        print(
            f"{r['id']:>8} {r['kind']:<20} {r['state']:<10} {r['priority']:>5} {tries:>5}  "
            f"{r['run_after']:%Y-%m-%d %H:%M:%S%z}  {error}"
        )
    print(
        "depth: "
        + (
            ", ".join(
                f"{s} {d['jobs']}" + (f" (ready {d['ready']})" if s == "queued" else "") for s, d in depth.items()
            )
            or "empty"
        )
    )
    return 0


def _show(args) -> int:
    with cli_common.open_db().connect() as conn:
        print(json.dumps(queue.get(conn, args.id), default=str, indent=2))
    return 0


def _cancel(args) -> int:
    with cli_common.open_db().begin() as conn:
        queue.cancel(conn, args.id)
    print(f"cancelled job {args.id}")
    return 0


def _retry(args) -> int:
    with cli_common.open_db().begin() as conn:
        queue.retry(conn, args.id)
    print(f"queued job {args.id} again")
    return 0


def _kinds(args) -> int:
    for kind, handler in sorted(registry.load_handlers().items()):
        params = ", ".join(_describe_param(name, p) for name, p in handler.params.items()) or "no parameters"
        print(f"{kind}: {params}")
    return 0


def _describe_param(name: str, param: registry.Param) -> str:
    text = f"{name} ({param.type.__name__}"
    text += ", required" if param.default is registry.REQUIRED else f", default {param.default!r}"
    if param.choices:
        text += f", one of {'/'.join(map(str, param.choices))}"
    return text + ")"
