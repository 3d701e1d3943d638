"""``trainsrv db ...``: migrations for ops; ``db url`` / ``db start`` / ``db stop`` and ``trainsrv sql`` for
people who want psql, Grafana or a notebook on the same database."""

from __future__ import annotations

from app import cli_common
from app.db import server_commands


def register(sub) -> None:
    db = sub.add_parser("db", help="the database: migrations, drift check, URL, keeping the embedded server up")
    db = db.add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="migrate to REV (default: head)")
    up.add_argument("revision", nargs="?", default="heads")
    up.set_defaults(func=_upgrade)
    down = db.add_parser("downgrade", help="migrate down to REV (e.g. base, 0001, -1)")
    down.add_argument("revision")
    down.set_defaults(func=_downgrade)
    db.add_parser("current", help="show the database's revision").set_defaults(func=_current)
    db.add_parser("check", help="exit 1 when behind head or when models drift").set_defaults(func=_check)
    server_commands.register(sub, db)


def _upgrade(args) -> int:
    from app.db import migrate  # alembic: loaded by the commands that need it

    engine = cli_common.open_db(require_head=False)
    migrate.upgrade(engine, args.revision)
    print(f"database at {_fmt(migrate.current_revisions(engine))}")
    return 0


def _downgrade(args) -> int:
    from app.db import migrate  # alembic: loaded by the commands that need it

    engine = cli_common.open_db(require_head=False)
    migrate.downgrade(engine, args.revision)
    print(f"database at {_fmt(migrate.current_revisions(engine))}")
    return 0


def _current(args) -> int:
    from app.db import migrate  # alembic: loaded by the commands that need it

    engine = cli_common.open_db(require_head=False)
    current, heads = migrate.current_revisions(engine), migrate.head_revisions()
    print(f"{_fmt(current)} ({'head' if current == heads else 'head is ' + _fmt(heads)})")
    return 0


def _check(args) -> int:
    from app.db import migrate  # alembic: loaded by the commands that need it

    engine = cli_common.open_db(require_head=True)
    from app.db import drift  # psycopg's sql composition: only for the check

    diffs = [str(d) for d in migrate.schema_drift(engine)] + drift.problems(engine)
    if diffs:
        for diff in diffs:
            print(f"drift: {diff}")
        return 1
    print(
        f"database at head ({_fmt(migrate.current_revisions(engine))}); models match the schema; "
        "views and functions match their newest files"
    )
    return 0


def _fmt(revs: set[str]) -> str:
    return ", ".join(sorted(revs)) or "base (empty)"
