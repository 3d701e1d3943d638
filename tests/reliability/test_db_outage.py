"""PostgreSQL crashes (immediate shutdown: no checkpoint, WAL recovery on start) and stays down for a
while, under a writing orchestrator and under a training trainer. Nothing acknowledged is lost.

* The orchestrator client never buffers (bound: zero records): a call either returns ids — the
  rows are committed, durably — or raises ``psycopg.OperationalError``. The orchestrator retries
  with backoff; retries are idempotent, so nothing is stored twice.
* The trainer (``trainsrv serve``) reconnects with backoff; the attempt that lost its database
  fails, is retried with backoff and resumes its session from the last checkpoint that survived;
  the weights end bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.client import Client, Prediction
from app.db import migrate
from app.db.embedded import EmbeddedServer
from app.db.engine import make_engine
from app.demo import candle_episodes as episodes
from app.ingest.builder import package_from_candles
from app.ingest.candles import ingest_candles
from app.jobs import queue, registry
from app.session_replay import verify
from app.trainer import cnn_train
from app.trainer import jobs as trainer_jobs
from tests.embedded_dirs import reachable
from tests.reliability.support import Trainer, scalar, wait_for

pytestmark = pytest.mark.slow

DOWN_S = 1.5  # how long the database stays down after the crash


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A PostgreSQL server of this module's own, which its tests crash and restart."""
    srv = EmbeddedServer(reachable(tmp_path_factory.mktemp("crashing-pg")))
    admin = srv.acquire()
    yield srv, admin
    srv.release()
    srv.stop()


def _database(admin_url: str) -> tuple[str, sa.Engine]:
    name = f"outage_{uuid.uuid4().hex[:8]}"
    with sa.create_engine(admin_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))  # generated name
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    return url, engine


def crash_and_restart(srv: EmbeddedServer, down_s: float = DOWN_S) -> None:
    """SIGQUIT to the postmaster is PostgreSQL's immediate shutdown: like a crash, recovery on start."""
    pid = srv._running_pid()
    os.kill(pid, signal.SIGQUIT)
    wait_for(lambda: srv._running_pid() is None, what="the server to go down")
    time.sleep(down_s)
    srv.acquire()


def _packages(engine, real_candles_path, count: int):
    ingest_candles(engine, real_candles_path, "BTC-PERP", "1m", progress=False)
    start = dt.datetime(2022, 1, 3, tzinfo=dt.UTC)
    with engine.connect() as conn:
        return [package_from_candles(conn, "BTC-PERP", start + dt.timedelta(minutes=5 * i)) for i in range(count)]


def test_orchestrator_acknowledged_records_survive_a_crash(server, real_candles_path):
    srv, admin = server
    url, engine = _database(admin)
    packages = _packages(engine, real_candles_path, 120)
    acked: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def orchestrator():
        client, i, backoff = Client(url), 0, 0.05
        while i < len(packages):
            try:
                acked[i] = client.record(packages[i], Prediction("cnn", "v1", "long", 0.6, 900))
                i, backoff = i + 1, 0.05
            except psycopg.OperationalError as exc:  # the client's one signal that nothing was acknowledged
                errors.append(str(exc).splitlines()[0])
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        client.close()

    thread = threading.Thread(target=orchestrator)
    thread.start()
    wait_for(lambda: len(acked) >= 30, what="records before the crash")
    crash_and_restart(srv)
    thread.join(timeout=300)
    assert not thread.is_alive() and len(acked) == len(packages)
    assert errors and all("connection" in e for e in errors)  # surfaced, clearly, while it was down

    engine.dispose()
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT id, data_hash FROM input_packages")).all())
        predictions = dict(conn.execute(sa.text("SELECT id, package_id FROM predictions")).all())
    assert len(stored) == len(packages) and len(predictions) == len(packages)  # retries stored nothing twice
    for i, (package_id, prediction_id) in acked.items():
        assert bytes(stored[package_id]) == packages[i].data_hash
        assert predictions[prediction_id] == package_id
    engine.dispose()


PARAMS = {
    "symbol": episodes.SYMBOL,
    "min_profitability": 0.0,
    "max_episodes": 1000,
    "epochs": 6,
    "batch_size": 16,
    "checkpoint_every": 10,
    "seed": 9,
    "device": "cpu",
    "model_config": '{"channels": 8, "hidden": 16}',
}


def test_training_survives_a_database_crash(server, real_candles_path, tmp_path):
    srv, admin = server
    url, engine = _database(admin)
    episodes.build_episodes(engine, real_candles_path, minutes=450)
    with engine.begin() as conn:
        job_id = queue.enqueue(conn, "train_cnn", PARAMS, max_attempts=5).id
    trainer = Trainer(url, tmp_path / "trainer.jsonl")
    try:
        sid = wait_for(lambda: scalar(engine, "SELECT max(id) FROM training_sessions"), what="a session", alive=trainer)
        wait_for(lambda: scalar(engine, "SELECT count(*) FROM training_steps") >= 15, what="steps", alive=trainer)
        crash_and_restart(srv)
        engine.dispose()
        wait_for(
            lambda: scalar(engine, "SELECT state FROM jobs WHERE id = :j", j=job_id) in ("succeeded", "failed"),
            timeout=300,
            what="the job to end",
            alive=trainer,
        )
    finally:
        assert trainer.stop() == 0, trainer.stderr()
    events = [e["event"] for e in trainer.events()]
    assert "worker.db_unavailable" in events and "worker.db_restored" in events
    job = queue.get(engine.connect(), job_id)
    assert job["state"] == "succeeded" and job["attempts"] >= 2, job
    assert scalar(engine, "SELECT metrics->>'resumes' FROM training_sessions WHERE id = :s", s=sid) is not None
    assert verify.verify_integrity(engine, sid).ok

    reference = cnn_train.train_cnn(engine, trainer_jobs.cnn_options(registry.get("train_cnn").validate(PARAMS)))
    final = "SELECT params_hash FROM checkpoints WHERE session_id = :s AND kind = 'final'"
    assert bytes(scalar(engine, final, s=sid)) == bytes(scalar(engine, final, s=reference["session_id"]))
    engine.dispose()
