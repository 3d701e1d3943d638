"""The lock a process holds while it reads a session's stored gradients (replay, replay onto a checkpoint).

``reading(engine, session_id)`` holds PostgreSQL's shared advisory lock (29780, session) on a connection
of its own for the block: many readers share it; ``trainsrv gc`` takes it exclusively (without waiting)
before pruning and skips the session while any reader holds it, and ``v_sessions_protected`` lists the
session as 'replay running'. Taking it waits for a gc transaction that is pruning the session right
now, so a reader that re-reads the session row inside the block sees ``pruned`` if gc won.
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa

from app.db import queries


@contextlib.contextmanager
def reading(engine: sa.Engine, session_id: int):
    """Hold the shared replay lock on ``session_id`` for the block (see the module docstring)."""
    conn = engine.connect()
    params = {"session_id": session_id}
    try:
        conn.execute(queries.get("retention.lock_for_reading"), params)
        conn.commit()
        yield
    finally:
        try:
            conn.execute(queries.get("retention.unlock_for_reading"), params)
            conn.commit()
        except sa.exc.DBAPIError:
            conn.invalidate()  # a lost connection released the lock already; never pool one that may hold it
        finally:
            conn.close()
