"""Bounded waits for the trainer's transaction-scoped advisory locks.

Labelling, event detection and experience building each serialise on an advisory lock. Since
migration 0011 only the trainer role and the owner may take advisory locks at all, so no analyst or
orchestrator login can hold one; a trainer still never waits for one longer than ``LOCK_WAIT_S``: a
holder that long is stuck, and the job fails with a clear message (and is retried) instead of hanging.
"""

from __future__ import annotations

import sqlalchemy as sa

from app.db import queries
from app.errors import TrainsrvError

LOCK_WAIT_S = 60.0


class LockBusy(TrainsrvError):
    """Another process held the lock for longer than the bounded wait."""


def take(conn: sa.Connection, query_name: str, what: str, wait_s: float | None = None) -> None:
    """Run the lock query ``query_name`` in ``conn``'s transaction, waiting at most ``wait_s`` seconds."""
    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    previous = conn.execute(sa.text("SELECT current_setting('lock_timeout')")).scalar_one()
    conn.execute(sa.text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{max(1, int(wait_s * 1000))}ms"})
    try:
        conn.execute(queries.get(query_name))
    except sa.exc.OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available: the timeout passed
            raise LockBusy(
                f"{what}: another process has held its lock for over {wait_s:g} s; try again later"
            ) from None
        raise
    conn.execute(sa.text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": previous})
