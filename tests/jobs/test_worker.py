"""The worker loop in this process: outcomes of handlers, bad jobs, heartbeats, cancellation, logs."""

from __future__ import annotations

import json
import logging
import threading

import sqlalchemy as sa

from app.jobs import queue
from app.jobs.worker import Worker
from tests.jobs.conftest import scalar, wait_for


def _enqueue(engine, kind, params=None, **kwargs) -> int:
    with engine.begin() as conn:
        return queue.enqueue(conn, kind, params, **kwargs).id


def _job(engine, job_id) -> dict:
    with engine.connect() as conn:
        return queue.get(conn, job_id)


def _worker(engine, settings, **kwargs) -> Worker:
    return Worker(engine, settings, worker_id="test-worker", schedule=False, **kwargs)


def test_bad_jobs_fail_with_a_clear_error_and_the_worker_goes_on(jobs_engine, settings):
    with jobs_engine.begin() as conn:
        unknown = conn.execute(sa.text("INSERT INTO jobs (kind) VALUES ('no_such_kind') RETURNING id")).scalar()
        bad = conn.execute(
            sa.text("INSERT INTO jobs (kind, params) VALUES ('noop', '{\"sleep_s\": \"x\"}') RETURNING id")
        ).scalar()
        missing = conn.execute(sa.text("INSERT INTO jobs (kind) VALUES ('test_flaky') RETURNING id")).scalar()
    good = _enqueue(jobs_engine, "noop")
    assert _worker(jobs_engine, settings).run(once=True) == 4
    expected = {
        unknown: "kind: unknown job kind 'no_such_kind'",
        bad: "sleep_s: must be a number",
        missing: "fail_times: is required",
    }
    for job_id, error in expected.items():
        row = _job(jobs_engine, job_id)
        assert row["state"] == "failed" and row["attempts"] == 1, row  # no retry: it would fail the same way
        assert row["last_error"].startswith(error)
    assert _job(jobs_engine, good)["state"] == "succeeded"


def test_a_failing_handler_is_retried_until_it_succeeds_or_runs_out(jobs_engine, settings):
    recovers = _enqueue(jobs_engine, "test_flaky", {"fail_times": 2}, max_attempts=3)
    gives_up = _enqueue(jobs_engine, "test_flaky", {"fail_times": 5}, max_attempts=2)
    worker = _worker(jobs_engine, settings)
    worker.run(max_jobs=5)  # 3 attempts + 2 attempts, waiting out the short backoffs
    ok, failed = _job(jobs_engine, recovers), _job(jobs_engine, gives_up)
    assert (ok["state"], ok["attempts"], ok["result"]) == ("succeeded", 3, {"attempt": 3})
    assert "flaky failure on attempt 2" in ok["last_error"]  # the last failure stays visible
    assert (failed["state"], failed["attempts"]) == ("failed", 2)
    assert failed["last_error"].startswith("RuntimeError: flaky failure on attempt 2")
    assert "Traceback" in failed["last_error"]


def test_a_result_that_is_not_json_fails_the_job(jobs_engine, settings):
    job_id = _enqueue(jobs_engine, "test_not_json")
    _worker(jobs_engine, settings).run(once=True)
    row = _job(jobs_engine, job_id)
    assert row["state"] == "failed" and row["last_error"].startswith("result: the handler returned a value")


def test_heartbeats_continue_while_the_handler_runs(jobs_engine, settings):
    job_id = _enqueue(jobs_engine, "test_watch", {"seconds": 1.2})
    _worker(jobs_engine, settings).run(once=True)
    result = _job(jobs_engine, job_id)["result"]
    # Interval 0.2 s over 1.2 s: the handler saw the claim's heartbeat and several later ones.
    assert result["distinct_heartbeats"] >= 3 and result["stopped_early"] is False


def test_cancelling_a_running_job_stops_its_handler_and_keeps_it_cancelled(jobs_engine, settings, caplog):
    job_id = _enqueue(jobs_engine, "test_watch", {"seconds": 60})
    worker = _worker(jobs_engine, settings)
    thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 1})
    with caplog.at_level(logging.INFO, logger="app.jobs.transitions"):
        thread.start()
        wait_for(lambda: _job(jobs_engine, job_id)["state"] == "running", what="job to start")
        with jobs_engine.begin() as conn:
            queue.cancel(conn, job_id)
        thread.join(timeout=30)
    assert not thread.is_alive()
    row = _job(jobs_engine, job_id)
    assert row["state"] == "cancelled" and row["result"] is None
    assert any(json.loads(r.getMessage())["event"] == "job.lost" for r in caplog.records)


def test_a_stalled_worker_loses_its_job_to_the_rescuer(jobs_engine, settings):
    job_id = _enqueue(jobs_engine, "test_record", {"hang_on_attempt": 1, "interruptible": True})
    first = Worker(jobs_engine, settings, worker_id="stalled", schedule=False)
    thread = threading.Thread(target=first.run, kwargs={"max_jobs": 1})
    thread.start()
    wait_for(lambda: scalar(jobs_engine, "SELECT count(*) FROM test_job_runs"), what="attempt 1 to start")
    with jobs_engine.begin() as conn:
        # As if its heartbeats had stopped an hour ago: the rescuer re-queues it.
        conn.execute(sa.text("UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = :id"), {"id": job_id})
        assert [r["id"] for r in queue.rescue(conn, settings.heartbeat_timeout_s)] == [job_id]
    assert Worker(jobs_engine, settings, worker_id="rescuer", schedule=False).run(max_jobs=1) == 1
    # The stalled worker's next heartbeat finds the job gone, so its handler stops; it records nothing.
    thread.join(timeout=30)
    assert not thread.is_alive()
    row = _job(jobs_engine, job_id)
    assert (row["state"], row["attempts"], row["locked_by"]) == ("succeeded", 2, "rescuer")
    assert scalar(jobs_engine, "SELECT count(*) FROM test_job_runs") == 2
    assert scalar(jobs_engine, "SELECT count(*) FROM test_job_results") == 1


def test_every_transition_is_one_json_line(jobs_engine, settings, caplog):
    ok = _enqueue(jobs_engine, "noop")
    retried = _enqueue(jobs_engine, "test_flaky", {"fail_times": 1})
    with caplog.at_level(logging.INFO, logger="app.jobs.transitions"):
        _worker(jobs_engine, settings).run(max_jobs=3)
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "app.jobs.transitions"]
    by_job = {}
    for e in events:
        if "job_id" in e:
            by_job.setdefault(e["job_id"], []).append(e["event"])
    assert by_job[ok] == ["job.started", "job.succeeded"]
    assert by_job[retried] == ["job.started", "job.retry_scheduled", "job.started", "job.succeeded"]
    assert events[0]["event"] == "worker.started" and events[-1]["event"] == "worker.stopped"
    assert all({"ts", "event"} <= set(e) for e in events)
    assert scalar(jobs_engine, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 2
