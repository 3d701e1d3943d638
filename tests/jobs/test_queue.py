"""The queue's statements against a real PostgreSQL: claim, ownership checks, retries, rescue."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from app.db import queries
from app.errors import TrainsrvError, ValidationError
from app.jobs import queue
from app.jobs.listener import Listener
from tests.jobs.conftest import scalar


def _enqueue(engine, kind="noop", params=None, **kwargs) -> queue.Enqueued:
    with engine.begin() as conn:
        return queue.enqueue(conn, kind, params, **kwargs)


def _claim(engine, worker="w1") -> queue.ClaimedJob | None:
    with engine.begin() as conn:
        return queue.claim(conn, worker)


def _job(engine, job_id) -> dict:
    with engine.connect() as conn:
        return queue.get(conn, job_id)


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def test_claim_uses_the_partial_queued_index(jobs_engine):
    with jobs_engine.begin() as conn:
        # A realistic table: mostly finished history, a few queued jobs.
        conn.execute(
            sa.text(
                "INSERT INTO jobs (kind, state, locked_by, finished_at) "
                "SELECT 'noop', 'succeeded', 'w', now() FROM generate_series(1, 20000)"
            )
        )
        conn.execute(sa.text("INSERT INTO jobs (kind) SELECT 'noop' FROM generate_series(1, 20)"))
        conn.execute(sa.text("ANALYZE jobs"))
        plan = conn.execute(sa.text("EXPLAIN (FORMAT JSON) " + queries.sql("jobs.claim")), {"worker": "w1"}).scalar()
    nodes = list(_plan_nodes(plan[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "jobs" and "Scan" in n["Node Type"]]
    claim_scans = [n for n in scans if n.get("Index Name") == "ix_jobs_claim"]
    assert claim_scans, json.dumps(plan, indent=1)
    assert not any(n["Node Type"] == "Seq Scan" for n in scans)
    assert any(n["Node Type"] == "LockRows" for n in nodes)


def test_a_lanes_claim_uses_the_partial_queued_index_and_takes_only_its_kinds(jobs_engine):
    with jobs_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (kind, state, locked_by, finished_at) "
                "SELECT 'noop', 'succeeded', 'w', now() FROM generate_series(1, 20000)"
            )
        )
        heavy = conn.execute(
            sa.text("INSERT INTO jobs (kind, priority) VALUES ('test_watch', 5) RETURNING id")
        ).scalar()
        light = conn.execute(sa.text("INSERT INTO jobs (kind) VALUES ('noop') RETURNING id")).scalar()
        conn.execute(sa.text("ANALYZE jobs"))
        plan = conn.execute(
            sa.text("EXPLAIN (FORMAT JSON) " + queries.sql("jobs.claim_kinds")), {"worker": "w1", "kinds": ["noop"]}
        ).scalar()
    nodes = list(_plan_nodes(plan[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "jobs" and "Scan" in n["Node Type"]]
    assert [n for n in scans if n.get("Index Name") == "ix_jobs_claim"], json.dumps(plan, indent=1)
    assert not any(n["Node Type"] == "Seq Scan" for n in scans)
    with jobs_engine.begin() as conn:
        assert queue.claim(conn, "maintenance", ("noop",)).id == light  # the higher-priority kind is not its
        assert queue.claim(conn, "maintenance", ("noop",)) is None
        assert queue.claim(conn, "main").id == heavy


def test_claim_takes_priority_then_age_and_skips_future_jobs(jobs_engine):
    low = _enqueue(jobs_engine, priority=0).id
    later = _enqueue(jobs_engine, priority=100, delay_s=3600).id
    high = _enqueue(jobs_engine, priority=5).id
    low2 = _enqueue(jobs_engine, priority=0).id
    claimed = [_claim(jobs_engine).id for _ in range(3)]
    assert claimed == [high, low, low2]
    assert _claim(jobs_engine) is None
    row = _job(jobs_engine, high)
    assert (row["state"], row["locked_by"], row["attempts"]) == ("running", "w1", 1)
    assert row["started_at"] is not None and row["heartbeat_at"] is not None
    assert _job(jobs_engine, later)["state"] == "queued"


def test_a_claimed_job_is_invisible_to_other_claimers_until_committed(jobs_engine):
    only = _enqueue(jobs_engine).id
    with jobs_engine.connect() as first:
        with first.begin():
            assert queue.claim(first, "w1").id == only
            # The row is locked by the open transaction: another worker skips it, never waits.
            assert _claim(jobs_engine, "w2") is None
    assert _job(jobs_engine, only)["locked_by"] == "w1"


def test_enqueue_refuses_unknown_kinds_and_bad_params_naming_the_field(jobs_engine):
    cases = [
        (("nope", {}), "kind", "unknown job kind 'nope'"),
        (("noop", {"sleep_s": "soon"}), "sleep_s", "must be a number"),
        (("noop", {"sleep_s": -1}), "sleep_s", "must be >= 0"),
        (("noop", {"speed": 1}), "speed", "is not a parameter of job kind 'noop'"),
        (("test_flaky", {}), "fail_times", "is required"),
    ]
    for (kind, params), field, problem in cases:
        with pytest.raises(ValidationError) as err:
            _enqueue(jobs_engine, kind, params)
        assert err.value.field == field and problem in str(err.value)
    with pytest.raises(ValidationError, match="priority"):
        _enqueue(jobs_engine, priority=2**40)
    with pytest.raises(ValidationError, match="max_attempts"):
        _enqueue(jobs_engine, max_attempts=0)
    assert scalar(jobs_engine, "SELECT count(*) FROM jobs") == 0


def test_params_are_stored_converted_with_defaults(jobs_engine):
    job = _enqueue(jobs_engine, "test_record", {"sleep_s": "0.5", "interruptible": "yes"})
    assert _job(jobs_engine, job.id)["params"] == {"sleep_s": 0.5, "hang_on_attempt": 0, "interruptible": True}


def test_dedupe_key_holds_one_active_job(jobs_engine):
    first = _enqueue(jobs_engine, dedupe_key="nightly")
    again = _enqueue(jobs_engine, dedupe_key="nightly")
    assert first.created and not again.created and again.id == first.id
    job = _claim(jobs_engine)
    assert not _enqueue(jobs_engine, dedupe_key="nightly").created  # running still holds the key
    with jobs_engine.begin() as conn:
        assert queue.finish(conn, job, "w1", {"ok": True})
    assert _enqueue(jobs_engine, dedupe_key="nightly").created  # finished: free again


def test_enqueue_once_never_repeats_a_key(jobs_engine):
    with jobs_engine.begin() as conn:
        first = queue.enqueue_once(conn, "noop", {}, "auto:noop:1")
        assert first is not None
        assert queue.enqueue_once(conn, "noop", {}, "auto:noop:1") is None
    job = _claim(jobs_engine)
    with jobs_engine.begin() as conn:
        queue.finish(conn, job, "w1", None)
        assert queue.enqueue_once(conn, "noop", {}, "auto:noop:1") is None
        assert queue.enqueue_once(conn, "noop", {}, "auto:noop:2") is not None


def test_only_the_owning_attempt_can_finish_fail_release_or_heartbeat(jobs_engine):
    _enqueue(jobs_engine)
    job = _claim(jobs_engine, "w1")
    stale = queue.ClaimedJob(job.id, job.kind, job.params, job.attempt - 1, job.max_attempts)
    with jobs_engine.begin() as conn:
        assert not queue.finish(conn, job, "w2", None)
        assert not queue.finish(conn, stale, "w1", None)
        assert queue.fail(conn, job, "w2", "boom") is None
        assert not queue.release(conn, job, "w2")
        assert not queue.heartbeat(conn, job, "w2")
        assert queue.heartbeat(conn, job, "w1")
        queue.cancel(conn, job.id)
        assert not queue.heartbeat(conn, job, "w1")
        assert not queue.finish(conn, job, "w1", {"late": True})
    row = _job(jobs_engine, job.id)
    assert row["state"] == "cancelled" and row["result"] is None


def test_failures_retry_with_exponential_backoff_then_stay_failed(jobs_engine, settings):
    from dataclasses import replace

    slow = replace(settings, retry_backoff_base_s=10.0, retry_backoff_max_s=15.0)
    job_id = _enqueue(jobs_engine, max_attempts=3).id
    delays = []
    for attempt in (1, 2):
        with jobs_engine.begin() as conn:
            conn.execute(sa.text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": job_id})
        job = _claim(jobs_engine)
        assert job.attempt == attempt
        with jobs_engine.begin() as conn:
            result = queue.fail(conn, job, "w1", f"boom {attempt}", settings=slow)
            delays.append(
                conn.execute(
                    sa.text("SELECT extract(epoch FROM run_after - now()) FROM jobs WHERE id = :id"), {"id": job_id}
                ).scalar()
            )
        assert result.state == "queued"
        row = _job(jobs_engine, job_id)
        assert row["locked_by"] is None and row["last_error"] == f"boom {attempt}"
    assert [round(float(d)) for d in delays] == [10, 15]  # 10 * 2**0, then 10 * 2**1 capped at 15
    with jobs_engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": job_id})
    job = _claim(jobs_engine)
    with jobs_engine.begin() as conn:
        assert queue.fail(conn, job, "w1", "boom 3", settings=slow).state == "failed"
    row = _job(jobs_engine, job_id)
    assert (row["state"], row["attempts"], row["last_error"]) == ("failed", 3, "boom 3")
    assert row["finished_at"] is not None


def test_non_retryable_failure_fails_at_once(jobs_engine):
    job_id = _enqueue(jobs_engine, max_attempts=5).id
    job = _claim(jobs_engine)
    with jobs_engine.begin() as conn:
        assert queue.fail(conn, job, "w1", "kind: unknown", retryable=False).state == "failed"
    assert _job(jobs_engine, job_id)["attempts"] == 1


def test_rescue_requeues_jobs_without_heartbeat_counting_the_attempt(jobs_engine):
    alive_id, dead_id, spent_id = (_enqueue(jobs_engine).id for _ in range(3))
    with jobs_engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET max_attempts = 1 WHERE id = :id"), {"id": spent_id})
    owners = {}
    for worker in ("w0", "w1", "w2"):
        job = _claim(jobs_engine, worker)
        owners[job.id] = (job, worker)
    with jobs_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE id IN (:a, :b)"),
            {"a": dead_id, "b": spent_id},
        )
        rescued = {r["id"]: r for r in queue.rescue(conn, timeout_s=30)}
    assert set(rescued) == {dead_id, spent_id}
    dead, spent, alive = (_job(jobs_engine, i) for i in (dead_id, spent_id, alive_id))
    assert (dead["state"], dead["attempts"], dead["locked_by"]) == ("queued", 1, None)
    assert "stopped heartbeating during attempt 1" in dead["last_error"]
    assert rescued[dead_id]["lost_by"] == owners[dead_id][1]
    assert (spent["state"], spent["attempts"]) == ("failed", 1)
    assert alive["state"] == "running"
    # The worker that lost the job can no longer record anything on it.
    with jobs_engine.begin() as conn:
        assert not queue.finish(conn, *owners[dead_id], None)
    assert _claim(jobs_engine, "w9").attempt == 2


def test_release_hands_the_job_back_uncounted(jobs_engine):
    job_id = _enqueue(jobs_engine).id
    job = _claim(jobs_engine)
    with jobs_engine.begin() as conn:
        assert queue.release(conn, job, "w1")
    row = _job(jobs_engine, job_id)
    assert (row["state"], row["attempts"], row["locked_by"], row["started_at"]) == ("queued", 0, None, None)


def test_cancel_and_retry_follow_the_states(jobs_engine):
    job_id = _enqueue(jobs_engine, dedupe_key="k").id
    with jobs_engine.begin() as conn:
        with pytest.raises(TrainsrvError, match="only failed or cancelled jobs can be retried"):
            queue.retry(conn, job_id)
        queue.cancel(conn, job_id)
        with pytest.raises(TrainsrvError, match="is cancelled; only queued or running"):
            queue.cancel(conn, job_id)
    other = _enqueue(jobs_engine, dedupe_key="k")
    assert other.created
    with jobs_engine.begin() as conn:
        with pytest.raises(TrainsrvError, match="another job with dedupe key 'k'"):
            queue.retry(conn, job_id)
        queue.cancel(conn, other.id)
        queue.retry(conn, job_id)
        with pytest.raises(TrainsrvError, match="no job with id 999999"):
            queue.cancel(conn, 999999)
    row = _job(jobs_engine, job_id)
    assert (row["state"], row["attempts"], row["finished_at"]) == ("queued", 0, None)


def test_list_and_depth(jobs_engine):
    ids = [_enqueue(jobs_engine).id for _ in range(3)]
    _enqueue(jobs_engine, "test_flaky", {"fail_times": 0}, delay_s=600)
    _claim(jobs_engine)
    with jobs_engine.connect() as conn:
        assert [r["id"] for r in queue.list_jobs(conn, state="queued", kind="noop")] == ids[:0:-1]
        assert len(queue.list_jobs(conn, limit=2)) == 2
        assert queue.depth(conn) == {"queued": {"jobs": 3, "ready": 2}, "running": {"jobs": 1, "ready": 1}}
        with pytest.raises(ValidationError, match="state"):
            queue.list_jobs(conn, state="done")


def test_queueing_a_job_notifies_listeners(jobs_engine):
    listener = Listener(jobs_engine)
    try:
        assert listener.wait(0.05) is False
        with jobs_engine.begin() as conn:
            for _ in range(50):
                queue.enqueue(conn, "noop")
            assert listener.wait(0.05) is False  # not before commit
        assert listener.wait(5) is True
        assert listener.wait(0.05) is False  # one wake-up for the whole batch
        job = _claim(jobs_engine)
        with jobs_engine.begin() as conn:
            queue.fail(conn, job, "w1", "boom")
        assert listener.wait(5) is True  # back to queued: notified again
    finally:
        listener.close()
