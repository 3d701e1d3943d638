"""Engine creation: the configured URL or the embedded server, with clear connection errors."""

from __future__ import annotations

import functools
import re

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from app.config import Settings, get_settings
from app.db.embedded import EmbeddedServer
from app.errors import ConfigError, DatabaseUnavailable

_embedded: dict[str, EmbeddedServer] = {}


def resolve_url(settings: Settings | None = None) -> str:
    """The SQLAlchemy URL to use: ``TRAINSRV_DATABASE_URL`` or the embedded server's."""
    settings = settings or get_settings()
    if settings.database_url:
        return normalise_url(settings.database_url)
    key = str(settings.data_dir)
    if key not in _embedded:
        _embedded[key] = EmbeddedServer(settings.data_dir)
    return _embedded[key].acquire()


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` / ``postgresql://`` URLs and select the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # ValueError: a port that is not a number; its message would quote the URL, password included.
        raise ConfigError(f"TRAINSRV_DATABASE_URL is not a valid database URL: {redact(url)}") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(f"TRAINSRV_DATABASE_URL must be a PostgreSQL URL, got {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages.

    Everything from the user name's ``:`` up to the *last* ``@`` is hidden, so an unescaped ``@``
    or ``:`` inside the password cannot leave part of it visible."""
    return re.sub(r"(://[^:/@]*:).*@", r"\1***@", url, flags=re.DOTALL)


def make_engine(url: str, **kwargs) -> sa.Engine:
    settings = get_settings()
    connect_args = {"connect_timeout": max(1, int(settings.db_connect_timeout_s))}
    connect_args.update(kwargs.pop("connect_args", {}))
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


@functools.cache
def _engine_for(url: str) -> sa.Engine:
    return make_engine(url)


def get_engine(settings: Settings | None = None) -> sa.Engine:
    """The process-wide engine for the configured database (connects lazily)."""
    return _engine_for(resolve_url(settings))


def check_connection(engine: sa.Engine) -> None:
    """Raise DatabaseUnavailable with a one-line reason when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot connect to {redact(engine.url.render_as_string(hide_password=True))}: {reason} "
            "(check TRAINSRV_DATABASE_URL, or unset it to use the embedded server)"
        ) from None
