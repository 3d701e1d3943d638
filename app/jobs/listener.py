"""Wake-up for idle workers: a dedicated connection that LISTENs for newly queued jobs.

Migration 0004's trigger sends ``NOTIFY trainsrv_jobs`` whenever a job becomes ``queued``.
A notification is only a hint to claim now; the worker also claims after every timeout, so a
notification lost (e.g. while reconnecting) delays a job by at most one poll interval.
"""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

CHANNEL = "trainsrv_jobs"


class Listener:
    """One autocommit psycopg connection, opened lazily and re-opened after a failure."""

    def __init__(self, engine: sa.Engine, connect_timeout_s: float = 10.0):
        self._engine = engine
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection | None = None

    def wait(self, timeout_s: float) -> bool:
        """Block until a job is queued or ``timeout_s`` passes; True when woken by a notification.

        Raises ``psycopg.OperationalError`` when the database is unreachable (the caller backs off).
        """
        conn = self._connection()
        try:
            woken = any(True for _ in conn.notifies(timeout=max(0.0, timeout_s), stop_after=1))
            if woken:
                self._drain(conn)
            else:
                # A silent connection may be a dead one (server restarted): check it while idle.
                conn.execute("SELECT 1")
            return woken
        except psycopg.Error:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except psycopg.Error:
                pass  # already broken; nothing left to release

    def _connection(self) -> psycopg.Connection:
        if self._conn is None:
            args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
            kwargs.setdefault("connect_timeout", max(1, int(self._connect_timeout_s)))
            conn = psycopg.connect(*args, **kwargs, autocommit=True)
            conn.execute(f"LISTEN {CHANNEL}")
            self._conn = conn
        return self._conn

    @staticmethod
    def _drain(conn: psycopg.Connection) -> None:
        # Notifications that piled up while we were busy say nothing more than "claim now".
        for _ in conn.notifies(timeout=0):
            pass
