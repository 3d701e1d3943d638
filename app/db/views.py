"""Versioned views: each version is an immutable file ``sql/views/<name>/vNNNN.sql``.

A migration that changes a view calls ``replace(name, new)`` in upgrade and
``replace(name, old)`` in downgrade; dependants are dropped and recreated explicitly by the
migration, never with CASCADE, so nothing disappears silently.
"""

from __future__ import annotations

from alembic import op

from app.db import catalog
from app.paths import SQL_DIR


def path(name: str, version: int, kind: str = "views"):
    return SQL_DIR / kind / name / f"v{version:04d}.sql"


def read(name: str, version: int, kind: str = "views") -> str:
    return path(name, version, kind).read_text()


def create_function(name: str, version: int) -> None:
    """Run ``sql/functions/<name>/vNNNN.sql`` (a ``CREATE OR REPLACE FUNCTION`` statement)."""
    op.execute(read(name, version, "functions"))


def secure_functions(signatures) -> None:
    """What migration 0008 gives every trainsrv function, for functions created later: no EXECUTE for
    PUBLIC, EXECUTE for the trainer. Signatures are constants from migration code."""
    for signature in signatures:
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO trainsrv_trainer")


ANALYST_ROLE = "trainsrv_analyst"
# Building blocks of the RL replay machinery, not documented for analysts (docs/analysts.md): the
# documented views built on them need no grant on them (a view reads its sources as its owner).
INTERNAL_VIEWS = frozenset(
    {"v_rl_replay_pending_draws", "v_rl_replay_pending_priorities", "v_rl_replay_totals", "v_rl_replay_weights"}
)


def create(name: str, version: int) -> None:
    """Create the view as a security barrier, with the comments ``sql/views/catalog.toml`` gives it and its
    columns; analysts may read it once their role exists (migration 0008 on), unless it is internal."""
    op.execute(read(name, version))
    _security_barrier(name)
    catalog.apply(op.get_bind(), [name])
    if name in INTERNAL_VIEWS:
        return
    # Re-created views lose their grants, so every creation grants again.
    op.execute(f"""
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ANALYST_ROLE}') THEN
                GRANT SELECT ON {name} TO {ANALYST_ROLE};
            END IF;
        END $$""")


def _security_barrier(name: str) -> None:
    # A reader's cheap function (e.g. in pg_temp) in a WHERE clause is then applied only to the rows
    # the view lets through, never to rows its own conditions filter out.
    op.execute(f"ALTER VIEW {name} SET (security_barrier = true)")


def redefine(name: str, version: int) -> None:
    """Replace the view's query in place (``CREATE OR REPLACE VIEW``): for versions with the same columns,
    so that the views built on it stay, with their grants."""
    statement = read(name, version)
    if "CREATE VIEW" not in statement:
        raise ValueError(f"{path(name, version)} has no CREATE VIEW statement")
    op.execute(statement.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
    _security_barrier(name)  # CREATE OR REPLACE VIEW resets the view's options
    catalog.apply(op.get_bind(), [name])  # columns a version appends need their comments


def drop(name: str) -> None:
    # Identifiers come from migration code, never from users.
    op.execute(f"DROP VIEW IF EXISTS {name}")


def replace(name: str, version: int | None) -> None:
    """Drop ``name`` and create it at ``version`` (None: leave it dropped)."""
    drop(name)
    if version is not None:
        create(name, version)
