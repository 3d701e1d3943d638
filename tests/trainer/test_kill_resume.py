"""kill -9 a training run driven by the CLI, resume it, and land on the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from app.demo import candle_episodes as support
from app.jobs import registry
from app.recording.checkpoints import CheckpointError
from app.recording.session import SessionBusy, SessionRecorder, SessionSpec
from app.trainer import cnn_train
from app.trainer import jobs as trainer_jobs

ARGS = {
    "symbol": support.SYMBOL,
    "min_profitability": "0",
    "max_episodes": "1000",
    "epochs": "5",
    "batch_size": "16",
    "checkpoint_every": "10",
    "seed": "3",
    "device": "cpu",
    "model_config": json.dumps(support.SMALL_MODEL),
}


def _cli(db_url: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, TRAINSRV_DATABASE_URL=db_url, LC_ALL="C.UTF-8")
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _flags() -> list[str]:
    out = []
    for k, v in ARGS.items():
        out += ["--" + k.replace("_", "-"), v]
    return out


def _wait_for_steps(engine, at_least: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT count(*) FROM training_steps")).scalar() >= at_least:
                return
        time.sleep(0.05)
    raise AssertionError("training did not progress")


def _one(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).one()


def test_killed_session_resumes_from_its_checkpoint_to_the_same_weights(engine, db_url, real_candles_path):
    support.build_episodes(engine, real_candles_path, minutes=450)
    proc = _cli(db_url, "train", "cnn", *_flags())
    _wait_for_steps(engine, 25, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    sid, status = _one(engine, "SELECT id, status FROM training_sessions")
    assert status == "running"  # killed: nobody could mark it, but nobody holds its lock either
    last_ckpt = _one(engine, "SELECT max(step) FROM checkpoints WHERE session_id = :s", s=sid)[0]
    steps_seen = _one(engine, "SELECT count(*) FROM training_steps WHERE session_id = :s", s=sid)[0]
    assert last_ckpt >= 10 and steps_seen >= last_ckpt
    # Every visible step is complete: its gradients committed with it.
    assert (
        _one(
            engine,
            "SELECT count(*) FROM training_steps t WHERE session_id = :s AND gradients_stored <> "
            "(SELECT count(DISTINCT param_name) FROM gradient_blobs b "
            " WHERE b.session_id = t.session_id AND b.step = t.step)",
            s=sid,
        )[0]
        == 0
    )

    resume = _cli(db_url, "train", "resume", str(sid))
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    done = json.loads(out)
    assert done["status"] == "succeeded"

    with engine.connect() as conn:
        steps = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT step FROM training_steps WHERE session_id = :s ORDER BY step"), {"s": sid}
            )
        ]
        metrics = conn.execute(sa.text("SELECT metrics FROM training_sessions WHERE id = :s"), {"s": sid}).scalar()
        final_hash = conn.execute(
            sa.text("SELECT params_hash FROM checkpoints WHERE session_id = :s AND kind = 'final'"), {"s": sid}
        ).scalar()
    assert steps == list(range(1, done["steps"] + 1))
    assert metrics["resumes"] == 1 and metrics["resumed_from_step"] == last_ckpt
    assert metrics["discarded_steps"] == steps_seen - last_ckpt

    # The same options trained without interruption reach bit-identical weights (CPU determinism).
    params = registry.get(trainer_jobs.CNN_JOB).validate(ARGS)
    reference = cnn_train.train_cnn(engine, trainer_jobs.cnn_options(params))
    with engine.connect() as conn:
        ref_hash = conn.execute(
            sa.text("SELECT params_hash FROM checkpoints WHERE session_id = :s AND kind = 'final'"),
            {"s": reference["session_id"]},
        ).scalar()
    assert bytes(ref_hash) == bytes(final_hash)


def test_a_live_session_cannot_be_resumed_while_its_trainer_runs(engine):
    live = SessionRecorder.start(engine, SessionSpec("cnn", "ref", {}, 0, "cpu"))
    try:
        with pytest.raises(SessionBusy, match=f"session {live.session_id} is being trained by a live process"):
            SessionRecorder.resume(engine, live.session_id)
    finally:
        live.fail("test over")
    with pytest.raises(CheckpointError, match="has no checkpoint"):  # lock free now, but nothing to resume from
        SessionRecorder.resume(engine, live.session_id)
