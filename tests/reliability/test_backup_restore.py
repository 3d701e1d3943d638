"""Backup and restore as ops do it (docs/reliability.md): ``pg_dump --format=custom`` of a database
with a recorded session, ``pg_restore`` into a new database, then the restored copy is at the
migration head, identical table by table, passes ``verify`` and replays its session bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.db import migrate
from app.db.embedded import bin_dir
from app.db.engine import make_engine
from app.demo import candle_episodes as episodes
from app.jobs import registry
from app.session_replay import exact, options, verify
from app.trainer import cnn_train
from app.trainer import jobs as trainer_jobs
from tests.reliability.support import table_digest

pytestmark = pytest.mark.slow


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as the libpq URI that pg_dump / pg_restore / psql take."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _tool(name: str, *args: str) -> None:
    result = subprocess.run([str(bin_dir() / name), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{name} failed: {result.stderr}"


@pytest.fixture
def restored_url(pg_admin_url):
    name = f"trainsrv_restored_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0'))  # generated name
    yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_dump_restore_then_replay_verifies_on_the_copy(engine, db_url, restored_url, real_candles_path, tmp_path):
    episodes.build_episodes(engine, real_candles_path, minutes=300)
    raw = {
        "symbol": episodes.SYMBOL,
        "min_profitability": "0",
        "epochs": "3",
        "batch_size": "16",
        "checkpoint_every": "5",
        "device": "cpu",
        "model_config": json.dumps(episodes.SMALL_MODEL),
    }
    session = cnn_train.train_cnn(engine, trainer_jobs.cnn_options(registry.get("train_cnn").validate(raw)))

    backup = tmp_path / "trainsrv.dump"
    _tool("pg_dump", "--format=custom", f"--file={backup}", libpq_url(db_url))
    _tool("pg_restore", "--exit-on-error", f"--dbname={libpq_url(restored_url)}", str(backup))

    copy = make_engine(restored_url)
    try:
        migrate.require_head(copy)
        assert table_digest(copy) == table_digest(engine)
        assert verify.verify_integrity(copy).ok
        report = exact.replay_session(copy, session["session_id"], options.ReplayOptions(verify=True))
        assert report.exact and report.divergence is None and len(report.checks) >= 3
    finally:
        copy.dispose()
