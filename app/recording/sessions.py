"""``training_sessions`` rows: the one module that writes them, and the way to read one.

Trainers and replays write through ``SessionRecorder`` (``app.recording.session``), which calls
``insert`` / ``update`` / ``mark_resumed`` here; retention (``app.retention``) calls ``mark_pruned`` and
``set_keep``; commands and jobs read a session with ``get``,
``config_of`` and ``resumable_of_job``. Analysts' reports read the views and named queries.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from app.db import models, queries
from app.errors import ValidationError

# Statuses a process may take over and continue from the last checkpoint.
RESUMABLE = ("running", "failed", "interrupted")

_table = models.TrainingSession.__table__


def insert(conn: sa.Connection, **values) -> int:
    """A new session row; returns its id."""
    return conn.execute(sa.insert(_table).values(**values).returning(_table.c.id)).scalar_one()


def update(session_id: int, **values) -> sa.Update:
    """UPDATE of one session; ``metrics`` are merged into the stored ones (resume counts survive)."""
    if "metrics" in values:
        values["metrics"] = _table.c.metrics.op("||")(sa.literal(values["metrics"], JSONB))
    return sa.update(_table).where(_table.c.id == session_id).values(**values)


def mark_resumed(conn: sa.Connection, session_id: int, *, dropped: int, step: int) -> None:
    """Reopen a session for training, counting the resume and the steps discarded after ``step``."""
    conn.execute(queries.get("trainer.mark_resumed"), {"session_id": session_id, "dropped": dropped, "step": step})


def mark_pruned(conn: sa.Connection, session_id: int, *, pruned: str, reason: str) -> None:
    """Retention removed the session's gradients (``gradients``) or its checkpoints too (``all``): it is no
    longer replay-exact, and says when and why (app/retention)."""
    conn.execute(queries.get("retention.mark_pruned"), {"session_id": session_id, "pruned": pruned, "reason": reason})


def set_keep(conn: sa.Connection, session_id: int, keep: bool):
    """Mark a session keep (retention never prunes it nor its lineage) or clear it; the row (id, keep,
    pruned), None for an unknown id."""
    return conn.execute(queries.get("retention.set_keep"), {"session_id": session_id, "keep": keep}).first()


def get(conn: sa.Connection, session_id: int, field: str = "session"):
    """The row of ``session_id``; when absent, a ValidationError naming ``field`` (the caller's option)."""
    row = conn.execute(sa.select(_table).where(_table.c.id == session_id)).first()
    if row is None:
        raise ValidationError(field, f"no training session with id {session_id}")
    return row


def config_of(engine: sa.Engine, session_id: int) -> dict:
    """The stored config of ``session_id``: everything needed to rebuild what it trained."""
    with engine.connect() as conn:
        return get(conn, session_id).config


def resumable_of_job(engine: sa.Engine, job_id: int) -> int | None:
    """The newest resumable session a job started: a retried job continues it instead of starting over."""
    query = (
        sa.select(_table.c.id)
        .where(_table.c.job_id == job_id, _table.c.status.in_(RESUMABLE))
        .order_by(_table.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar()
