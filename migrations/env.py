"""Alembic environment: runs against trainsrv's configured database (or a given connection)."""

from alembic import context

from app.db import models
from app.db.migrate import include_object, serialise

config = context.config
target_metadata = models.Base.metadata


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        serialise(connection)  # before alembic reads the current revision: concurrent runs queue up
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    from app.db.engine import get_engine

    with get_engine().connect() as conn:
        run(conn)
        conn.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
main()
