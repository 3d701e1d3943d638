"""Trainer processes against one database: exactly-once under concurrency, kill -9, SIGTERM,
and a PostgreSQL restart under a running worker."""

from __future__ import annotations

import os
import signal

import pytest
import sqlalchemy as sa

from app.db import migrate
from app.db.embedded import EmbeddedServer
from app.db.engine import make_engine
from app.jobs import queue
from tests.embedded_dirs import reachable
from tests.jobs import handlers
from tests.jobs.conftest import scalar, wait_for

pytestmark = pytest.mark.slow


def _enqueue_many(engine, n: int, params: dict | None = None) -> list[int]:
    with engine.begin() as conn:
        return [queue.enqueue(conn, "test_record", params).id for _ in range(n)]


def _states(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT state, count(*) FROM jobs GROUP BY state")).all())


def _runs_per_job(engine) -> dict[int, int]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT job_id, count(*) FROM test_job_runs GROUP BY job_id")).all())


def _results(engine) -> int:
    return scalar(engine, "SELECT count(*) FROM test_job_results")


def test_four_workers_run_8000_jobs_exactly_once(jobs_engine, workers):
    ids = _enqueue_many(jobs_engine, 8000)
    procs = [workers("--once") for _ in range(4)]
    for proc in procs:
        assert proc.wait(timeout=170) == 0, proc.stderr()
    assert _states(jobs_engine) == {"succeeded": 8000}
    runs = _runs_per_job(jobs_engine)
    assert sorted(runs) == ids and set(runs.values()) == {1}
    assert _results(jobs_engine) == 8000
    with jobs_engine.connect() as conn:
        by_pid = dict(conn.execute(sa.text("SELECT pid, count(*) FROM test_job_runs GROUP BY pid")).all())
    assert set(by_pid) == {p.pid for p in procs}, by_pid  # all four took part
    for proc in procs:
        succeeded = [e for e in proc.events() if e["event"] == "job.succeeded"]
        assert len(succeeded) == by_pid[proc.pid]


def test_a_killed_workers_job_is_rescued_and_completed_by_another(jobs_engine, workers):
    [stuck] = _enqueue_many(jobs_engine, 1, {"hang_on_attempt": 1})
    victim = workers()
    wait_for(lambda: _runs_per_job(jobs_engine).get(stuck), what="the victim to start the job")
    others = _enqueue_many(jobs_engine, 50)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    rescuer = workers("--max-jobs", "51")
    assert rescuer.wait(timeout=60) == 0, rescuer.stderr()

    assert _states(jobs_engine) == {"succeeded": 51}
    row = queue.get(jobs_engine.connect(), stuck)
    assert row["attempts"] == 2 and row["locked_by"] != f"{victim.pid}" and "stopped heartbeating" in row["last_error"]
    runs = _runs_per_job(jobs_engine)
    assert runs[stuck] == 2 and all(runs[i] == 1 for i in others)
    assert _results(jobs_engine) == 51  # one result per job: nothing lost, nothing twice
    rescued = [e for e in rescuer.events() if e["event"] == "job.rescued"]
    assert [e["job_id"] for e in rescued] == [stuck]


def test_sigterm_releases_an_interruptible_job(jobs_engine, workers):
    [job_id] = _enqueue_many(jobs_engine, 1, {"sleep_s": 600, "interruptible": True})
    proc = workers()
    wait_for(lambda: _runs_per_job(jobs_engine).get(job_id), what="the job to start")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.stderr()
    row = queue.get(jobs_engine.connect(), job_id)
    assert (row["state"], row["attempts"], row["locked_by"]) == ("queued", 0, None)
    main_lane = [e["event"] for e in proc.events() if not e["worker"].endswith("/maintenance")]
    assert main_lane[-2:] == ["job.released", "worker.stopped"]
    assert [e["event"] for e in proc.events()].count("worker.stopped") == 2  # the maintenance lane stopped too


def test_sigterm_lets_a_running_job_finish(jobs_engine, workers):
    [job_id, waiting] = _enqueue_many(jobs_engine, 2, {"sleep_s": 1.0})
    proc = workers()
    wait_for(lambda: _runs_per_job(jobs_engine).get(job_id), what="the job to start")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.stderr()
    assert queue.get(jobs_engine.connect(), job_id)["state"] == "succeeded"
    assert queue.get(jobs_engine.connect(), waiting)["state"] == "queued"  # not started after the signal
    assert _results(jobs_engine) == 1


@pytest.fixture
def own_server(tmp_path):
    """A PostgreSQL server this test may stop and start."""
    server = EmbeddedServer(reachable(tmp_path) / "pg")
    url = server.acquire()
    engine = make_engine(url)
    migrate.upgrade(engine)
    handlers.create_tables(engine)
    yield server, url, engine
    engine.dispose()
    server.release()
    server.stop()


def test_worker_survives_a_postgresql_restart(own_server, workers):
    server, url, engine = own_server
    first = _enqueue_many(engine, 20)
    proc = workers(env={"TRAINSRV_DATABASE_URL": url})
    wait_for(lambda: _states(engine) == {"succeeded": 20}, what="the first batch")

    server.stop()
    engine.dispose()
    wait_for(lambda: any(e["event"] == "worker.db_unavailable" for e in proc.events()), what="the outage to show")
    server.acquire()  # restart the same data directory
    second = _enqueue_many(engine, 20)
    wait_for(lambda: _states(engine) == {"succeeded": 40}, what="the second batch")
    assert proc.proc.poll() is None  # still serving
    assert _runs_per_job(engine) == {i: 1 for i in first + second} and _results(engine) == 40
    assert any(e["event"] == "worker.db_restored" for e in proc.events())
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.stderr()


def test_light_jobs_run_in_the_maintenance_lane_while_a_long_job_runs(jobs_engine, workers):
    # test_watch stands in for training (main lane only); test_record jobs are the light kind here.
    with jobs_engine.begin() as conn:
        long_job = queue.enqueue(conn, "test_watch", {"seconds": 4.0}).id
    proc = workers(env={"TRAINSRV_MAINTENANCE_KINDS": "test_record"})
    wait_for(
        lambda: scalar(jobs_engine, f"SELECT state = 'running' FROM jobs WHERE id = {long_job}"),
        what="the long job to start",
    )
    light = _enqueue_many(jobs_engine, 20)
    wait_for(lambda: _states(jobs_engine).get("succeeded", 0) >= 20, timeout=30, what="the light jobs")
    # All light jobs finished while the long job was still running, in the maintenance lane.
    assert scalar(jobs_engine, f"SELECT state FROM jobs WHERE id = {long_job}") == "running"
    lanes = dict(scalar_rows(jobs_engine, "SELECT id, locked_by FROM jobs WHERE kind = 'test_record'"))
    assert all(lanes[i].endswith("/maintenance") for i in light)
    wait_for(lambda: _states(jobs_engine) == {"succeeded": 21}, timeout=30, what="the long job")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.stderr()
    assert all(n == 1 for n in _runs_per_job(jobs_engine).values()) and _results(jobs_engine) == 20


def scalar_rows(engine, sql: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).all()
