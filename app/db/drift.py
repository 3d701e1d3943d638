"""Drift of views and SQL functions: does the database still hold what the newest versioned files define?

``trainsrv db check`` compares the models with the tables (alembic) and, here, every view and function
with its newest file (``sql/views/<name>/vNNNN.sql``, ``sql/functions/<name>/vNNNN.sql``): a view whose
definition was replaced by hand, a function whose body was edited, or one that is missing. The files
are created again as *temporary* objects in a transaction that is rolled back, and PostgreSQL's own
rendering of both is compared, so the check changes nothing and needs no more than the TEMP privilege.
"""

from __future__ import annotations

import re

import psycopg
import sqlalchemy as sa

from app.db import queries
from app.paths import SQL_DIR

_CREATE_VIEW = re.compile(r"\bCREATE\s+VIEW\b", re.IGNORECASE)
_CREATE_FUNCTION = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+", re.IGNORECASE)


def newest(kind: str) -> dict[str, str]:
    """``{name: SQL text}`` of the newest version file of every view or function folder."""
    found = {}
    for folder in sorted((SQL_DIR / kind).iterdir()):
        versions = sorted(folder.glob("v[0-9][0-9][0-9][0-9].sql"))
        if folder.is_dir() and versions:
            found[folder.name] = versions[-1].read_text()
    return found


def problems(engine: sa.Engine) -> list[str]:
    """One line per view or function that differs from its newest file (empty: no drift)."""
    with engine.connect() as conn:
        conn.execute(sa.text("SET LOCAL check_function_bodies = off"))
        # Load pgvector's library, so that its settings (SET hnsw.* on functions) are known to a non-owner too.
        try:
            with conn.begin_nested():
                conn.execute(sa.text("SELECT '[1]'::vector"))
        except sa.exc.DBAPIError:
            pass  # no pgvector: the files that need it will say so
        try:
            return _view_problems(conn) + _function_problems(conn)
        finally:
            conn.rollback()


def _view_problems(conn: sa.Connection) -> list[str]:
    files = newest("views")
    stored = {r.name: r.definition for r in conn.execute(queries.get("drift.view_definitions")) if not r.temporary}
    found = []
    for name in _dependency_order(files):
        if name not in stored:
            found.append(f"view {name} is missing (sql/views/{name})")
            continue
        temp_sql = _CREATE_VIEW.sub("CREATE TEMP VIEW", files[name], count=1)
        try:
            with conn.begin_nested():
                _run_file(conn, temp_sql)
        except (sa.exc.DBAPIError, psycopg.Error) as exc:
            found.append(f"view {name}: its newest file no longer applies ({_first_line(exc)})")
    wanted = {r.name: r.definition for r in conn.execute(queries.get("drift.view_definitions")) if r.temporary}
    for name, definition in sorted(wanted.items()):
        if stored.get(name) != definition:
            found.append(f"view {name}: definition differs from its newest file (sql/views/{name})")
    return found


def _function_problems(conn: sa.Connection) -> list[str]:
    stored = {r.signature: r.body for r in conn.execute(queries.get("drift.function_bodies")) if not r.temporary}
    candidates: dict[str, set[str]] = {}
    found = []
    for folder, text in newest("functions").items():
        temp_sql = _CREATE_FUNCTION.sub("CREATE OR REPLACE FUNCTION pg_temp.", text)
        try:
            with conn.begin_nested() as savepoint:
                _run_file(conn, temp_sql)
                for r in conn.execute(queries.get("drift.function_bodies")):
                    if r.temporary:
                        candidates.setdefault(r.signature, set()).add(r.body)
                savepoint.rollback()  # the next folder may define the same functions again
        except (sa.exc.DBAPIError, psycopg.Error) as exc:
            found.append(f"functions in sql/functions/{folder}: the newest file no longer applies ({_first_line(exc)})")
    for signature, bodies in sorted(candidates.items()):
        if signature not in stored:
            found.append(f"function {signature} is missing")
        elif stored[signature] not in bodies:
            found.append(f"function {signature}: body differs from its newest file")
    return found


def _run_file(conn: sa.Connection, text: str) -> None:
    # A versioned file from the repository, run as the migrations run it; no parameters, so psycopg
    # leaves its % and : characters alone.
    with conn.connection.cursor() as cur:
        cur.execute(text)


def _dependency_order(files: dict[str, str]) -> list[str]:
    """Views before the views whose files name them outside comments."""
    code = {n: re.sub(r"--[^\n]*", "", text) for n, text in files.items()}
    needs = {n: {m for m in files if m != n and re.search(rf"\b{m}\b", code[n])} for n in files}
    order: list[str] = []
    while needs:
        ready = sorted(n for n, deps in needs.items() if not deps - set(order)) or sorted(needs)[:1]
        for name in ready:
            order.append(name)
            needs.pop(name)
    return order


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", exc) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
