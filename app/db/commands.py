"""``trainsrv db ...``: migrations for ops."""

from __future__ import annotations

from app import cli_common
from app.db import migrate


def register(sub) -> None:
    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="migrate to REV (default: head)")
    up.add_argument("revision", nargs="?", default="heads")
    up.set_defaults(func=_upgrade)
    down = db.add_parser("downgrade", help="migrate down to REV (e.g. base, 0001, -1)")
    down.add_argument("revision")
    down.set_defaults(func=_downgrade)
    db.add_parser("current", help="show the database's revision").set_defaults(func=_current)
    db.add_parser("check", help="exit 1 when behind head or when models drift").set_defaults(func=_check)


def _upgrade(args) -> int:
    engine = cli_common.open_db(require_head=False)
    migrate.upgrade(engine, args.revision)
    print(f"database at {_fmt(migrate.current_revisions(engine))}")
    return 0


def _downgrade(args) -> int:
    engine = cli_common.open_db(require_head=False)
    migrate.downgrade(engine, args.revision)
    print(f"database at {_fmt(migrate.current_revisions(engine))}")
    return 0


def _current(args) -> int:
    engine = cli_common.open_db(require_head=False)
    current, heads = migrate.current_revisions(engine), migrate.head_revisions()
    print(f"{_fmt(current)} ({'head' if current == heads else 'head is ' + _fmt(heads)})")
    return 0


def _check(args) -> int:
    engine = cli_common.open_db(require_head=True)
    diffs = migrate.schema_drift(engine)
    if diffs:
        for diff in diffs:
            print(f"drift: {diff}")
        return 1
    print(f"database at head ({_fmt(migrate.current_revisions(engine))}); models match the schema")
    return 0


def _fmt(revs: set[str]) -> str:
    return ", ".join(sorted(revs)) or "base (empty)"
