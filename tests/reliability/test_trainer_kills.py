"""kill -9 the trainer (``trainsrv serve`` running a ``train_cnn`` job) inside each window where a
crash could leave a half-written step: during a training step, during a gradient write and during
a checkpoint write. After every kill nothing partial is visible; after every restart the job is
rescued, the session resumes from its last checkpoint, and at the end ``trainsrv verify`` is clean
and the weights equal those of an uninterrupted run, bit for bit.

How each window is hit, deterministically and without hooks in the product:

* **training step** — the job trains ``tests.reliability.stall_model:build`` (the reference CNN
  whose forward pass waits while a ``stall`` file exists): the kill lands inside a forward pass.
* **gradient write** — the test holds ``LOCK TABLE training_steps IN EXCLUSIVE MODE``. The
  writer's next transaction streams its gradient blobs, then blocks on the step rows' COPY; the
  test sees it waiting in ``pg_stat_activity`` (with rows already written: ``backend_xid`` set)
  and kills the trainer.
* **checkpoint write** — the same with ``checkpoints`` locked: the batch that ends with a
  checkpoint has written its blobs and steps and blocks on the checkpoint's INSERT.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from app.demo import candle_episodes as episodes
from app.jobs import queue, registry
from app.paths import REPO_ROOT
from app.session_replay import verify
from app.trainer import cnn_train
from app.trainer import jobs as trainer_jobs
from tests.reliability.support import Trainer, scalar, wait_for

pytestmark = pytest.mark.slow

PARAMS = {
    "symbol": episodes.SYMBOL,
    "min_profitability": 0.0,
    "max_episodes": 1000,
    "epochs": 6,
    "batch_size": 16,
    "checkpoint_every": 10,
    "seed": 5,
    "device": "cpu",
    "model": "tests.reliability.stall_model:build",
    "model_config": json.dumps(episodes.SMALL_MODEL),
}


def _max_step(engine, sid) -> int:
    return scalar(engine, "SELECT coalesce(max(step), 0) FROM training_steps WHERE session_id = :s", s=sid)


def _session(engine):
    return scalar(engine, "SELECT max(id) FROM training_sessions")


def _blocked_writer(engine):
    """The trainer's backend waiting on our table lock, with rows already written in its transaction."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT pid, query, backend_xid IS NOT NULL AS wrote FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        ).first()


def _assert_nothing_partial(engine, sid) -> None:
    """What a reader sees after a kill: only whole steps, whole checkpoints, nothing half-written."""
    report = verify.verify_integrity(engine, sid)
    assert report.ok, [p.describe() for p in report.problems]
    last = _max_step(engine, sid)
    assert scalar(engine, "SELECT count(*) FROM gradient_blobs WHERE session_id = :s AND step > :m", s=sid, m=last) == 0
    assert scalar(engine, "SELECT count(*) FROM checkpoints WHERE session_id = :s AND step > :m", s=sid, m=last) == 0
    assert scalar(engine, "SELECT count(*) FROM training_steps WHERE session_id = :s", s=sid) == last  # no holes
    assert scalar(engine, "SELECT status FROM training_sessions WHERE id = :s", s=sid) == "running"


def _kill_in_a_step(trainer: Trainer, engine, tmp_path) -> None:
    sid = wait_for(lambda: _session(engine), what="the session to start", alive=trainer)
    wait_for(lambda: _max_step(engine, sid) >= 12, what="steps", alive=trainer)
    (tmp_path / "stall").write_text("")
    wait_for(lambda: (tmp_path / "stalled").exists(), what="a forward pass to stall", alive=trainer)
    trainer.kill9()
    (tmp_path / "stall").unlink()
    (tmp_path / "stalled").unlink()


def _kill_while_blocked(trainer: Trainer, engine, table: str, after_step: int, waiting_on: str) -> None:
    sid = _session(engine)
    wait_for(lambda: _max_step(engine, sid) >= after_step, what=f"step {after_step}", alive=trainer)
    with engine.connect() as lock:
        lock.execute(sa.text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))  # table: a fixed name from this module
        blocked = wait_for(lambda: _blocked_writer(engine), what=f"the writer to block on {table}", alive=trainer)
        # The writer's transaction streams a batch's gradient blobs before its step rows, so a
        # writer waiting on training_steps is past its gradient COPY inside the same transaction.
        assert waiting_on in blocked.query, blocked
        trainer.kill9()
        lock.rollback()


@pytest.fixture
def start(db_url, tmp_path):
    """``start(n)``: trainer process number n; any still running at the end are stopped."""
    started: list[Trainer] = []

    def launch(n: int) -> Trainer:
        started.append(Trainer(db_url, tmp_path / f"trainer{n}.jsonl", {"TRAINSRV_TEST_STALL_DIR": str(tmp_path)}))
        return started[-1]

    yield launch
    for trainer in started:
        trainer.stop()


def test_kill_9_in_each_window_then_resume_to_the_same_weights(engine, db_url, real_candles_path, tmp_path, start):
    episodes.build_episodes(engine, real_candles_path, minutes=450)
    with engine.begin() as conn:
        job_id = queue.enqueue(conn, "train_cnn", PARAMS, max_attempts=6).id

    _kill_in_a_step(start(1), engine, tmp_path)
    sid = _session(engine)
    _assert_nothing_partial(engine, sid)

    trainer = start(2)
    _kill_while_blocked(trainer, engine, "training_steps", _max_step(engine, sid) + 12, "COPY training_steps")
    _assert_nothing_partial(engine, sid)

    trainer = start(3)
    _kill_while_blocked(trainer, engine, "checkpoints", _max_step(engine, sid) + 12, "INSERT INTO checkpoints")
    _assert_nothing_partial(engine, sid)
    assert (
        _max_step(engine, sid) % 10 != 0
        or scalar(
            engine,
            "SELECT count(*) FROM checkpoints WHERE session_id = :s AND step = :m",
            s=sid,
            m=_max_step(engine, sid),
        )
        == 1
    )

    last = start(4)
    wait_for(
        lambda: scalar(engine, "SELECT state FROM jobs WHERE id = :j", j=job_id) in ("succeeded", "failed"),
        what="the job to end",
        alive=last,
    )
    assert last.stop() == 0, last.stderr()
    job = queue.get(engine.connect(), job_id)
    assert (job["state"], job["attempts"]) == ("succeeded", 4), job
    assert [e["job_id"] for e in last.events() if e["event"] == "job.rescued"] == [job_id]

    total = job["result"]["steps"]
    with engine.connect() as conn:
        steps = list(
            conn.execute(
                sa.text("SELECT step FROM training_steps WHERE session_id = :s ORDER BY step"), {"s": sid}
            ).scalars()
        )
        status, metrics = conn.execute(
            sa.text("SELECT status, metrics FROM training_sessions WHERE id = :s"), {"s": sid}
        ).one()
    assert steps == list(range(1, total + 1)) and status == "succeeded" and metrics["resumes"] == 3

    cli = subprocess.run(
        [sys.executable, "-m", "app.cli", "verify"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"TRAINSRV_DATABASE_URL": db_url, "LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert cli.returncode == 0 and "ok: no corrupted or missing rows" in cli.stdout, cli.stdout + cli.stderr

    # Nothing was lost or applied twice: an uninterrupted run reaches the very same weights.
    reference = cnn_train.train_cnn(engine, trainer_jobs.cnn_options(registry.get("train_cnn").validate(PARAMS)))
    final = "SELECT params_hash FROM checkpoints WHERE session_id = :s AND kind = 'final'"
    assert bytes(scalar(engine, final, s=sid)) == bytes(scalar(engine, final, s=reference["session_id"]))
