"""``trainsrv db url``, ``db start``, ``db stop`` and ``trainsrv sql``: the database for a person at a keyboard."""

from __future__ import annotations

import signal
import subprocess
import sys

from app import cli_common
from app.config import get_settings
from app.db import access, keepalive
from app.db.embedded import EmbeddedServer
from app.errors import TrainsrvError

ANALYST_OPTIONS = "-c role=trainsrv_analyst"


def register(sub, db) -> None:
    url = db.add_parser("url", help="print the configured database's connection URL (for psql, Grafana)")
    url.add_argument("--show-password", action="store_true", help="print the password instead of ***")
    url.set_defaults(func=_url)
    start = db.add_parser("start", help="keep the embedded server running until `db stop`")
    start.set_defaults(func=_start)
    db.add_parser("stop", help="stop keeping the embedded server running").set_defaults(func=_stop)
    sql = sub.add_parser(
        "sql",
        help="open psql on the configured database",
        description="psql on the configured database (the embedded server's own psql when "
        "installed); arguments after -- go to psql unchanged.",
    )
    sql.add_argument(
        "-c",
        "--command",
        action="append",
        default=[],
        type=cli_common.non_empty,
        help="run this SQL and exit (repeatable)",
    )
    sql.add_argument("--analyst", action="store_true", help="as trainsrv_analyst: see what analysts see")
    sql.add_argument("psql_args", nargs="*", help="further psql arguments (after --)")
    sql.set_defaults(func=_sql)


def _embedded_dir():
    settings = get_settings()
    if settings.database_url:
        raise TrainsrvError("TRAINSRV_DATABASE_URL is set: that server is run by its owner, not by trainsrv")
    return settings.data_dir


def _url(args) -> int:
    print(access.libpq_url(access.sqlalchemy_url(), with_password=args.show_password))
    if not get_settings().database_url and keepalive.holder_pid(get_settings().data_dir) is None:
        print(
            "note: the embedded server runs only while a trainsrv process uses it; `trainsrv db start` keeps it up",
            file=sys.stderr,
        )
    return 0


def _start(args) -> int:
    data_dir = _embedded_dir()
    pid, started = keepalive.start(data_dir)
    url = access.libpq_url(EmbeddedServer(data_dir).url())
    print(f"embedded server {'started' if started else 'already kept running'} (keep-alive pid {pid}): {url}")
    print(f"psql: trainsrv sql   or   {access.psql_program()} '{url}'")
    return 0


def _stop(args) -> int:
    data_dir = _embedded_dir()
    if not keepalive.stop(data_dir):
        print("the embedded server was not being kept running")
        return 0
    users = EmbeddedServer(data_dir).live_handles()
    if users:
        print(f"no longer kept running; it stops when its {len(users)} other trainsrv process(es) exit")
    else:
        print("embedded server stopped")
    return 0


def _sql(args) -> int:
    url = _connect_url()
    extra = [arg for command in args.command for arg in ("-c", command)] + list(args.psql_args)
    argv, env = access.psql_command(url, extra)
    if args.analyst:
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {ANALYST_OPTIONS}".strip()
    # psql handles Ctrl-C itself (it cancels the running query); we wait for it, then release the server.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.run(argv, env=env).returncode
    finally:
        signal.signal(signal.SIGINT, previous)


def _connect_url() -> str:
    # Connect once ourselves first: an unreachable or misconfigured database is the usual one-line error
    # (password hidden), and the embedded server is started and held while psql runs.
    engine = cli_common.open_db(require_head=False)
    return engine.url.render_as_string(hide_password=False)
