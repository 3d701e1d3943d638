"""Alembic, driven from Python: upgrade / downgrade / current / drift check / head guard."""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.db import models
from app.errors import SchemaOutOfDate, TrainsrvError
from app.paths import ALEMBIC_INI

_GRADIENT_PARTITION = re.compile(r"gradient_blobs_s[0-9]+")


def alembic_config(connection: sa.Connection | None = None) -> Config:
    cfg = Config(str(ALEMBIC_INI))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return connection_revisions(conn)


def connection_revisions(conn: sa.Connection) -> set[str]:
    """The revisions the database of ``conn`` is at (empty when never migrated)."""
    return set(MigrationContext.configure(conn).get_current_heads())


# Migrations hold an advisory lock (sql/queries/migrations.sql) for their whole transaction, so two
# `db upgrade`s (or an upgrade and a downgrade) run one after the other: the second then finds the
# first one's work done. Since migration 0011 only the trainer role and the owner may take advisory locks.
MIGRATION_LOCK_WAIT_S = 600.0


def serialise(conn: sa.Connection, wait_s: float | None = None) -> None:
    """Take the migration lock in ``conn``'s transaction, waiting at most ``wait_s`` seconds."""
    from app.db import locks

    locks.take(conn, "migrations.lock", "migrations", MIGRATION_LOCK_WAIT_S if wait_s is None else wait_s)


def previous_revision(revision: str) -> str:
    """The revision a migration follows (its ``down_revision``): e.g. a schema just before it, for tests
    and benches that compare the two whatever the chain is re-ordered to."""
    down = ScriptDirectory.from_config(alembic_config()).get_revision(revision).down_revision
    if not isinstance(down, str):
        raise TrainsrvError(f"migration {revision} does not follow exactly one revision ({down!r})")
    return down


def upgrade(engine: sa.Engine, revision: str = "heads") -> None:
    _run(engine, command.upgrade, revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    _run(engine, command.downgrade, revision)


def _run(engine: sa.Engine, fn, revision: str) -> None:
    from alembic.util import CommandError

    with engine.begin() as conn:
        try:
            fn(alembic_config(conn), revision)
        except CommandError as exc:
            raise TrainsrvError(f"migration to {revision!r} failed: {exc}") from None


def schema_drift(engine: sa.Engine) -> list:
    """Differences between the models and the migrated schema (empty when they match)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": include_object})
        return compare_metadata(ctx, models.Base.metadata)


def include_object(obj, name, type_, reflected, compare_to):
    """Views are versioned SQL files, not models; alembic's own table is not ours either, nor are the
    per-session partitions of gradient_blobs (created and dropped at run time, migration 0013)."""
    return not (
        type_ == "table" and (name.startswith("v_") or name == "alembic_version" or _GRADIENT_PARTITION.fullmatch(name))
    )


def require_head(engine: sa.Engine) -> None:
    """Refuse to work on a database that is not migrated to head."""
    current, heads = current_revisions(engine), head_revisions()
    if current != heads:
        have = ", ".join(sorted(current)) or "empty (never migrated)"
        raise SchemaOutOfDate(
            f"database schema is at {have}, code expects {', '.join(sorted(heads))}: "
            "run `trainsrv db upgrade` (or `alembic upgrade heads`)"
        )
