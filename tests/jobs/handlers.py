"""Job kinds used only by the queue tests (loaded in workers with TRAINSRV_HANDLER_MODULES).

``test_record`` writes one row per execution (``test_job_runs``) and, after its work, one
result row per job (``test_job_results``, primary key job id: a duplicated result fails the
job instead of hiding). ``create_tables`` makes both in a test database.
"""

from __future__ import annotations

import os
import time

import sqlalchemy as sa

from app.jobs import registry

TABLES = (
    "CREATE TABLE IF NOT EXISTS test_job_runs (job_id bigint NOT NULL, attempt int NOT NULL, "
    "pid int NOT NULL, ran_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE TABLE IF NOT EXISTS test_job_results (job_id bigint PRIMARY KEY, pid int NOT NULL)",
)


def create_tables(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for ddl in TABLES:
            conn.execute(sa.text(ddl))


def _no_flush_wait(conn: sa.Connection) -> None:
    # Test bookkeeping only; the tests stop PostgreSQL cleanly (fast shutdown flushes the WAL).
    conn.execute(sa.text("SET LOCAL synchronous_commit = off"))


@registry.handler(
    "test_record",
    sleep_s=registry.Param(float, default=0.0, min=0.0),
    hang_on_attempt=registry.Param(int, default=0, min=0),
    interruptible=registry.Param(bool, default=False),
)
def record(ctx: registry.JobContext, params: dict) -> dict:
    """Record the execution, work for ``sleep_s`` (or 1 h on attempt ``hang_on_attempt``), record the result."""
    with ctx.engine.begin() as conn:
        _no_flush_wait(conn)
        conn.execute(
            sa.text("INSERT INTO test_job_runs (job_id, attempt, pid) VALUES (:j, :a, :p)"),
            {"j": ctx.job_id, "a": ctx.attempt, "p": os.getpid()},
        )
    seconds = 3600.0 if ctx.attempt == params["hang_on_attempt"] else params["sleep_s"]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if params["interruptible"] and ctx.should_stop():
            raise registry.Interrupted()
        time.sleep(0.02)
    with ctx.engine.begin() as conn:
        _no_flush_wait(conn)
        conn.execute(
            sa.text("INSERT INTO test_job_results (job_id, pid) VALUES (:j, :p)"), {"j": ctx.job_id, "p": os.getpid()}
        )
    return {"pid": os.getpid()}


@registry.handler("test_flaky", fail_times=registry.Param(int, min=0))
def flaky(ctx: registry.JobContext, params: dict) -> dict:
    """Fail the first ``fail_times`` attempts, then succeed."""
    if ctx.attempt <= params["fail_times"]:
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@registry.handler("test_watch", seconds=registry.Param(float, min=0.0))
def watch(ctx: registry.JobContext, params: dict) -> dict:
    """Run up to ``seconds``, stopping early when told; report heartbeats seen and why it stopped."""
    beats = set()
    deadline = time.monotonic() + params["seconds"]
    while time.monotonic() < deadline and not ctx.should_stop():
        with ctx.engine.connect() as conn:
            beats.add(
                conn.execute(sa.text("SELECT heartbeat_at FROM jobs WHERE id = :id"), {"id": ctx.job_id}).scalar()
            )
        time.sleep(0.05)
    return {"distinct_heartbeats": len(beats), "stopped_early": ctx.should_stop()}


@registry.handler("test_not_json")
def not_json(ctx: registry.JobContext, params: dict) -> dict:
    return {"value": float("nan")}
