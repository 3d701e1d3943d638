"""Similar past setups by embedding (pgvector HNSW), with what they earned."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from app.db import queries
from app.errors import TrainsrvError


def similar_setups(conn: sa.Connection, package_id: int, k: int = 10) -> tuple[list[dict], dict]:
    """The k nearest earlier setups of the same symbol and their aggregate (win rate, mean profit).

    Raises TrainsrvError when the package does not exist, has no embedding, or k is out of range.
    """
    params = {"package_id": package_id, "k": k}
    try:
        with conn.begin_nested():
            rows = [dict(r) for r in conn.execute(queries.get("analysts.similar_setups"), params).mappings()]
            summary = dict(conn.execute(queries.get("analysts.similar_setups_summary"), params).mappings().one())
    except DBAPIError as exc:
        if exc.orig is not None and getattr(exc.orig, "sqlstate", None) in ("22023", "P0002"):
            raise TrainsrvError(str(exc.orig).splitlines()[0]) from None
        raise
    return rows, summary
