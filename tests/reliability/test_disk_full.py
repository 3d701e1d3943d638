"""Disk nearly full: ``gradient_blobs`` lives in a tablespace on a 2 MiB tmpfs, so a gradient write
runs out of space mid-session. The write fails cleanly — the session stops, marked ``failed`` with
PostgreSQL's "No space left on device" — nothing committed is corrupted, and once space is back
the session resumes and ends with the same weights as an uninterrupted run.

Needs root (mount) and the embedded test server on this machine; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.db.embedded import SYSTEM_USER
from app.demo import candle_episodes as episodes
from app.jobs import registry
from app.recording.writer import WriterError
from app.session_replay import verify
from app.trainer import cnn_train
from app.trainer import jobs as trainer_jobs
from tests.reliability.support import scalar

pytestmark = pytest.mark.slow

# 78k parameters: about 310 kB of gradients per step, so the 2 MiB fill up within a few checkpoints.
PARAMS = {
    "symbol": episodes.SYMBOL,
    "min_profitability": 0.0,
    "epochs": 3,
    "batch_size": 16,
    "checkpoint_every": 3,
    "seed": 2,
    "device": "cpu",
    "model_config": json.dumps({"channels": 64, "hidden": 128}),
}


@pytest.fixture
def small_tablespace(pg_admin_url):
    """A tablespace on a 2 MiB tmpfs; yields its name."""
    if os.environ.get("TRAINSRV_TEST_DATABASE_URL") or os.geteuid() != 0:
        pytest.skip("needs root and the embedded test server (a tmpfs is mounted for the tablespace)")
    # Outside pytest's private tmp folders: the server's own user must be able to reach it.
    mount = Path(tempfile.mkdtemp(prefix="trainsrv-small-", dir="/tmp"))
    mount.chmod(0o755)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    name = f"small_{uuid.uuid4().hex[:8]}"
    try:
        location = mount / "ts"
        location.mkdir()
        user = pwd.getpwnam(SYSTEM_USER)
        os.chown(location, user.pw_uid, user.pw_gid)
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE TABLESPACE {name} LOCATION '{location}'"))  # generated name, our path
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP TABLESPACE IF EXISTS {name}"))
        admin.dispose()
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


# gradient_blobs is partitioned by session (migration 0013): its own tablespace is where new sessions'
# partitions go; moving back means moving every partition too.
GRADIENTS_TO_DEFAULT = """
DO $$ DECLARE r record; BEGIN
    ALTER TABLE gradient_blobs SET TABLESPACE pg_default;
    FOR r IN SELECT relid::text AS part FROM pg_partition_tree('gradient_blobs') WHERE isleaf LOOP
        EXECUTE format('ALTER TABLE %s SET TABLESPACE pg_default', r.part);
    END LOOP;
END $$"""


@pytest.fixture
def full_engine(engine, small_tablespace):
    """The test database with gradient_blobs on the small tablespace (moved back before teardown)."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE gradient_blobs SET TABLESPACE {small_tablespace}"))
    yield engine
    with engine.begin() as conn:
        conn.execute(sa.text(GRADIENTS_TO_DEFAULT))


def test_a_full_disk_stops_the_session_cleanly_and_it_resumes(full_engine, real_candles_path):
    engine = full_engine
    episodes.build_episodes(engine, real_candles_path, minutes=450)
    opts = trainer_jobs.cnn_options(registry.get("train_cnn").validate(PARAMS))
    with pytest.raises(WriterError, match="No space left on device"):
        cnn_train.train_cnn(engine, opts)

    sid = scalar(engine, "SELECT max(id) FROM training_sessions")
    status, error = (
        engine.connect().execute(sa.text("SELECT status, error FROM training_sessions WHERE id = :s"), {"s": sid}).one()
    )
    assert status == "failed" and "No space left on device" in error
    last = scalar(engine, "SELECT max(step) FROM training_steps WHERE session_id = :s", s=sid) or 0
    assert last < scalar(
        engine, "SELECT (config->>'steps_per_epoch')::int * 3 FROM training_sessions WHERE id = :s", s=sid
    )  # it stopped early
    assert verify.verify_integrity(engine, sid).ok  # what was committed is whole

    with engine.begin() as conn:  # space is back
        conn.execute(sa.text(GRADIENTS_TO_DEFAULT))
    resumed = cnn_train.resume_cnn(engine, sid)
    assert resumed["status"] == "succeeded"
    assert verify.verify_integrity(engine, sid).ok
    reference = cnn_train.train_cnn(engine, opts)
    final = "SELECT params_hash FROM checkpoints WHERE session_id = :s AND kind = 'final'"
    assert bytes(scalar(engine, final, s=sid)) == bytes(scalar(engine, final, s=reference["session_id"]))
