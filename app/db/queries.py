"""Named SQL queries, kept in ``sql/queries/<area>.sql``.

Each query starts with a header line ``-- name: <name>`` followed by one comment line saying
what it does; the body runs until the next header. Queries are loaded once and executed with
bound parameters only (``:param``) — never assembled from strings.

    from app.db import queries
    conn.execute(queries.get("jobs.claim"), {"worker": "w1"})
"""

from __future__ import annotations

import functools
import re

import sqlalchemy as sa

from app.paths import SQL_DIR

_HEADER = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.MULTILINE)


@functools.cache
def _load(area: str) -> dict[str, str]:
    text = (SQL_DIR / "queries" / f"{area}.sql").read_text()
    parts = _HEADER.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in found:
            raise ValueError(f"query {area}.{name} is defined twice")
        found[name] = body.strip().rstrip(";")
    return found


def sql(qualified_name: str) -> str:
    """The raw SQL text of ``area.name``."""
    area, _, name = qualified_name.partition(".")
    try:
        return _load(area)[name]
    except KeyError:
        raise KeyError(f"no query named {qualified_name!r} in sql/queries/{area}.sql") from None


@functools.cache
def get(qualified_name: str) -> sa.TextClause:
    """The query ``area.name`` as a SQLAlchemy text clause, ready for bound parameters."""
    return sa.text(sql(qualified_name))
