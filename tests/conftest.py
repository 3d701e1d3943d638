"""Shared fixtures: a real PostgreSQL (embedded, or TRAINSRV_TEST_DATABASE_URL), a template
database migrated once per run, and a fresh copy of it per test (or per module).

Set TRAINSRV_TEST_DATABASE_URL to an admin URL of a PostgreSQL >= 16 with pgvector to run the
suite against it instead of the embedded server.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url

from app import config
from app.db import migrate
from app.db.embedded import EmbeddedServer
from app.db.engine import make_engine, normalise_url
from app.paths import REPO_ROOT
from tests.embedded_dirs import reachable

# CI replays the same examples on every run, so a red build always means a change broke
# something; developers' runs keep exploring new examples.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

SHARED_CANDLES = REPO_ROOT.parent / "shared" / "data" / "nautilus-ftx-btc-perp-1m" / "btc-perp-20211231-20220201_1m.csv"


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory) -> str:
    """URL of a maintenance database on the test server (owner rights)."""
    external = os.environ.get("TRAINSRV_TEST_DATABASE_URL")
    if external:
        yield normalise_url(external)
        return
    server = EmbeddedServer(reachable(tmp_path_factory.mktemp("pgserver")))
    url = server.acquire()
    yield url
    server.release()


def _admin_execute(admin_url: str, statement: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def _database_url(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def template_db(pg_admin_url) -> str:
    """Name of a database migrated to head once per test run; tests copy it."""
    name = f"trainsrv_tpl_{uuid.uuid4().hex[:8]}"
    _admin_execute(pg_admin_url, f'CREATE DATABASE "{name}"')
    engine = make_engine(_database_url(pg_admin_url, name))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    _admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_copy(admin_url: str, template: str):
    name = f"trainsrv_t_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name, _database_url(admin_url, name)


@pytest.fixture
def empty_db_url(pg_admin_url):
    """A brand-new, unmigrated database (migration tests)."""
    name = f"trainsrv_e_{uuid.uuid4().hex[:12]}"
    _admin_execute(pg_admin_url, f'CREATE DATABASE "{name}"')
    yield _database_url(pg_admin_url, name)
    _admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_admin_url, template_db, monkeypatch):
    """A fresh migrated database for this test; also made the process-wide configured database."""
    name, url = _fresh_copy(pg_admin_url, template_db)
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", url)
    config.set_settings(None)
    yield url
    config.set_settings(None)
    _admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def module_db_url(pg_admin_url, template_db):
    """A fresh migrated database shared by one test module (for expensive set-ups)."""
    name, url = _fresh_copy(pg_admin_url, template_db)
    yield url
    _admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def real_candles_path() -> Path:
    """The shared real BTC-PERP 1-minute candles (skips when the shared data is not present)."""
    if not SHARED_CANDLES.exists():
        pytest.skip(f"shared candles not found at {SHARED_CANDLES}")
    return SHARED_CANDLES
