"""One database per experiment lane (family, arm, seed), on the server of the configured database.

Every lane starts from the same migrated, empty template, so nothing one lane does (``times_trained``,
RL priorities and replay configuration, deployments, sessions) can reach another, and a lane run twice
gives the same rows whatever ran before it. The experiment's results are copied into the configured
database (``experiments``, ``experiment_results``); lane databases are dropped at the end unless kept.
Needs the CREATEDB privilege (the embedded server's owner has it).
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.db import migrate
from app.db.engine import make_engine

_NAME = re.compile(r"^[a-z0-9_]{1,63}$")


def database_name(main: sa.Engine, experiment_id: int, lane: str) -> str:
    """``<main database>_x<experiment>_<lane>``, cut to PostgreSQL's 63 characters."""
    base = make_url(main.url).database or "trainsrv"
    name = re.sub(r"[^a-z0-9_]", "_", f"{base}_x{experiment_id}_{lane}".lower())
    return name[:63]


def url_of(main: sa.Engine, name: str) -> str:
    return make_url(main.url).set(database=name).render_as_string(hide_password=False)


def _admin(main: sa.Engine, statement: str) -> None:
    engine = sa.create_engine(main.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a lane database name: {name!r}")
    return name


def create_template(main: sa.Engine, name: str) -> sa.Engine:
    """A new database migrated to head (the lanes' template); returns an engine on it."""
    drop(main, name)
    _admin(main, f'CREATE DATABASE "{_checked(name)}"')
    engine = make_engine(url_of(main, name))
    migrate.upgrade(engine)
    return engine


def clone(main: sa.Engine, template: str, name: str) -> sa.Engine:
    """A copy of ``template`` (which must have no open connection) named ``name``."""
    drop(main, name)
    _admin(main, f'CREATE DATABASE "{_checked(name)}" TEMPLATE "{_checked(template)}"')
    return make_engine(url_of(main, name))


def drop(main: sa.Engine, name: str) -> None:
    _admin(main, f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')
