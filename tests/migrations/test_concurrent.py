"""Migrations serialise on an advisory lock: two `db upgrade`s at once both succeed (issue 18)."""

from __future__ import annotations

import concurrent.futures

import sqlalchemy as sa

from app.db import migrate
from tests.e2e import cli


def test_two_concurrent_upgrades_both_succeed(empty_db_url):
    env = {"TRAINSRV_DATABASE_URL": empty_db_url}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: cli.run("db", "upgrade", env=env, timeout=300), range(2)))
    for run in runs:
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    engine = sa.create_engine(empty_db_url)
    try:
        assert migrate.current_revisions(engine) == migrate.head_revisions()
    finally:
        engine.dispose()
