"""Lineage and the contamination check (the SQL is ``model_contamination`` over ``v_model_lineage``'s links).

An evaluation slice counts only if no model in the candidate's lineage (itself, the session it was
initialised from, and so on) trained on data ending after the slice's start.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from app.db import queries


def contamination(conn: sa.Connection, session_id: int, slice_start: dt.datetime | str) -> dict:
    """``{"contaminated": bool, "contaminated_by": [{session_id, depth, trained_through}, ...]}``."""
    rows = (
        conn.execute(queries.get("registry.contamination"), {"session_id": session_id, "slice_start": slice_start})
        .mappings()
        .all()
    )
    members = [
        {
            "session_id": r["session_id"],
            "depth": r["depth"],
            "trained_through": r["trained_through"].isoformat() if r["trained_through"] else None,
        }
        for r in rows
    ]
    return {"contaminated": bool(members), "contaminated_by": members}


def lineage(conn: sa.Connection, session_id: int) -> list[dict]:
    """The model's lineage, itself first (depth 0)."""
    return [dict(r) for r in conn.execute(queries.get("registry.lineage"), {"session_id": session_id}).mappings()]


def judged(engine: sa.Engine, session_id: int, slice_start: dt.datetime | str, evaluation: dict) -> dict:
    """``evaluation`` with the contamination verdict of its slice added (unchanged when empty)."""
    if not evaluation:
        return evaluation
    with engine.connect() as conn:
        return {**evaluation, **contamination(conn, session_id, slice_start)}
