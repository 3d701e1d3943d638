"""The job queue's operations on the ``jobs`` table (SQL in ``sql/queries/jobs.sql``).

Every function takes a ``sa.Connection`` and runs inside the caller's transaction, so an
orchestrator or a handler can enqueue work atomically with its own writes:

    with engine.begin() as conn:
        job = queue.enqueue(conn, "train_cnn", {"epochs": 3}, dedupe_key="train_cnn:nightly")

A job's life: ``queued`` -> (claim) ``running`` -> ``succeeded`` | ``failed`` | back to
``queued`` (retry with backoff, rescue after a lost heartbeat, or release on shutdown);
``cancelled`` at any point before it ends. After the claim, every change is conditional on the
row still being this worker's attempt; the functions return False / None when it is not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from app.config import Settings, get_settings
from app.db import models, queries
from app.errors import TrainsrvError, ValidationError
from app.jobs import registry

LIST_COLUMNS = (
    "id",
    "kind",
    "state",
    "priority",
    "attempts",
    "max_attempts",
    "run_after",
    "locked_by",
    "dedupe_key",
    "last_error",
    "created_at",
    "started_at",
    "finished_at",
)


@dataclasses.dataclass(frozen=True)
class Enqueued:
    """The job that holds the work: new (``created``) or the active one with the same dedupe key."""

    id: int | None
    created: bool


@dataclasses.dataclass(frozen=True)
class ClaimedJob:
    """A job this worker has claimed; ``attempt`` identifies the claim in later updates."""

    id: int
    kind: str
    params: dict
    attempt: int
    max_attempts: int
    priority: int = 0
    dedupe_key: str | None = None


@dataclasses.dataclass(frozen=True)
class FailResult:
    """Where a failed attempt left the job: ``queued`` again (at ``run_after``) or ``failed``."""

    state: str
    run_after: dt.datetime
    attempts: int
    max_attempts: int


# A job delayed longer than ten years is a mistake (and past PostgreSQL's interval arithmetic at 1e308).
MAX_DELAY_S = 10 * 365 * 86400

# -- enqueueing -------------------------------------------------------------------------------


def validate(
    kind: str,
    params: dict | None,
    priority: int = 0,
    max_attempts: int | None = None,
    dedupe_key: str | None = None,
    delay_s: float = 0.0,
) -> dict:
    """The job's parameters as its handler will see them; raises ValidationError naming the field."""
    if not isinstance(delay_s, (int, float)) or isinstance(delay_s, bool) or not 0 <= delay_s <= MAX_DELAY_S:
        raise ValidationError("delay_s", f"must be a number of seconds in [0, {MAX_DELAY_S}], got {delay_s!r}")
    if not isinstance(priority, int) or isinstance(priority, bool) or not -(2**31) <= priority < 2**31:
        raise ValidationError("priority", f"must be a 32-bit integer, got {priority!r}")
    if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
        raise ValidationError("max_attempts", f"must be an integer >= 1, got {max_attempts!r}")
    if dedupe_key is not None and (not isinstance(dedupe_key, str) or not dedupe_key.strip() or "\x00" in dedupe_key):
        raise ValidationError("dedupe_key", f"must be a non-empty string without NUL characters, got {dedupe_key!r}")
    return registry.get(kind).validate(params)


def enqueue(
    conn: sa.Connection,
    kind: str,
    params: dict | None = None,
    *,
    priority: int = 0,
    dedupe_key: str | None = None,
    max_attempts: int | None = None,
    delay_s: float = 0.0,
    settings: Settings | None = None,
) -> Enqueued:
    """Queue a job of a registered ``kind``; a duplicate active ``dedupe_key`` returns the existing job."""
    clean = validate(kind, params, priority, max_attempts, dedupe_key, delay_s)
    row = conn.execute(
        queries.get("jobs.enqueue"),
        {
            "kind": kind,
            "params": json.dumps(clean),
            "priority": priority,
            "dedupe_key": dedupe_key,
            "max_attempts": max_attempts or (settings or get_settings()).job_max_attempts,
            "delay_s": float(delay_s),
        },
    ).first()
    if row is not None:
        return Enqueued(row.id, True)
    active = conn.execute(queries.get("jobs.active_by_dedupe_key"), {"dedupe_key": dedupe_key}).first()
    return Enqueued(active.id if active else None, False)


def enqueue_once(
    conn: sa.Connection,
    kind: str,
    params: dict | None,
    dedupe_key: str,
    *,
    priority: int = 0,
    max_attempts: int | None = None,
    settings: Settings | None = None,
) -> int | None:
    """Queue a job unless one with ``dedupe_key`` was ever enqueued; the new job's id or None."""
    clean = validate(kind, params, priority, max_attempts, dedupe_key)
    return conn.execute(
        queries.get("jobs.enqueue_once"),
        {
            "kind": kind,
            "params": json.dumps(clean),
            "priority": priority,
            "dedupe_key": dedupe_key,
            "max_attempts": max_attempts or (settings or get_settings()).job_max_attempts,
        },
    ).scalar()


# -- a worker's side --------------------------------------------------------------------------


def claim(conn: sa.Connection, worker: str, kinds: tuple[str, ...] | None = None) -> ClaimedJob | None:
    """Claim the best ready job (of one of ``kinds``, when given) for ``worker`` (one statement, SKIP
    LOCKED); commit before working."""
    if kinds is None:
        row = conn.execute(queries.get("jobs.claim"), {"worker": worker}).first()
    else:
        row = conn.execute(queries.get("jobs.claim_kinds"), {"worker": worker, "kinds": list(kinds)}).first()
    if row is None:
        return None
    return ClaimedJob(row.id, row.kind, row.params or {}, row.attempts, row.max_attempts, row.priority, row.dedupe_key)


def _mine(job: ClaimedJob, worker: str) -> dict[str, Any]:
    return {"id": job.id, "worker": worker, "attempt": job.attempt}


def heartbeat(conn: sa.Connection, job: ClaimedJob, worker: str) -> bool:
    """Refresh the job's heartbeat; False when the job is no longer this worker's attempt."""
    return conn.execute(queries.get("jobs.heartbeat"), _mine(job, worker)).first() is not None


def encode_result(result: Any) -> str | None:
    """A handler's result as JSON text for ``jobs.result``; ValidationError when it is not JSON."""
    if result is None:
        return None
    try:
        return json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError("result", f"the handler returned a value that is not JSON ({exc})") from None


def finish(conn: sa.Connection, job: ClaimedJob, worker: str, result: Any) -> bool:
    """Mark the attempt succeeded with ``result``; False when the job was taken away meanwhile."""
    params = {**_mine(job, worker), "result": encode_result(result)}
    return conn.execute(queries.get("jobs.finish"), params).first() is not None


def fail(
    conn: sa.Connection,
    job: ClaimedJob,
    worker: str,
    error: str,
    *,
    retryable: bool = True,
    settings: Settings | None = None,
) -> FailResult | None:
    """Record a failed attempt: back to the queue with backoff while attempts remain, else failed."""
    settings = settings or get_settings()
    row = conn.execute(
        queries.get("jobs.fail"),
        {
            **_mine(job, worker),
            "error": error,
            "retryable": retryable,
            "backoff_base_s": settings.retry_backoff_base_s,
            "backoff_max_s": settings.retry_backoff_max_s,
        },
    ).first()
    return FailResult(row.state, row.run_after, row.attempts, row.max_attempts) if row else None


def release(conn: sa.Connection, job: ClaimedJob, worker: str) -> bool:
    """Give the attempt back to the queue without counting it (clean shutdown)."""
    return conn.execute(queries.get("jobs.release"), _mine(job, worker)).first() is not None


def rescue(conn: sa.Connection, timeout_s: float) -> list[dict]:
    """Re-queue (or fail, when out of attempts) running jobs with no heartbeat for ``timeout_s``."""
    rows = conn.execute(queries.get("jobs.rescue"), {"timeout_s": float(timeout_s)}).mappings()
    return [dict(r) for r in rows]


# -- ops --------------------------------------------------------------------------------------


def get(conn: sa.Connection, job_id: int) -> dict:
    """Every column of one job; TrainsrvError when there is none."""
    row = conn.execute(sa.select(models.Job.__table__).where(models.Job.id == job_id)).mappings().first()
    if row is None:
        raise TrainsrvError(f"no job with id {job_id}")
    return dict(row)


def list_jobs(conn: sa.Connection, state: str | None = None, kind: str | None = None, limit: int = 50) -> list[dict]:
    """The newest jobs first, optionally of one state and / or kind."""
    if state is not None and state not in models.JOB_STATES:
        raise ValidationError("state", f"must be one of {', '.join(models.JOB_STATES)}, got {state!r}")
    table = models.Job.__table__
    query = sa.select(*(table.c[name] for name in LIST_COLUMNS)).order_by(table.c.id.desc()).limit(limit)
    if state is not None:
        query = query.where(table.c.state == state)
    if kind is not None:
        query = query.where(table.c.kind == kind)
    return [dict(r) for r in conn.execute(query).mappings()]


def depth(conn: sa.Connection) -> dict[str, dict[str, int]]:
    """Jobs per state, with how many of them are ready to run now (queue depth for ops)."""
    rows = conn.execute(queries.get("jobs.depth")).mappings()
    return {r["state"]: {"jobs": r["jobs"], "ready": r["ready"]} for r in rows}


def cancel(conn: sa.Connection, job_id: int) -> None:
    """Cancel a queued or running job (its worker stops at the next heartbeat)."""
    if conn.execute(queries.get("jobs.cancel"), {"id": job_id}).first() is None:
        state = get(conn, job_id)["state"]
        raise TrainsrvError(f"job {job_id} is {state}; only queued or running jobs can be cancelled")


def retry(conn: sa.Connection, job_id: int) -> None:
    """Queue a failed or cancelled job again with a fresh attempt budget."""
    try:
        with conn.begin_nested():
            updated = conn.execute(queries.get("jobs.retry"), {"id": job_id}).first()
    except sa.exc.IntegrityError:
        key = get(conn, job_id)["dedupe_key"]
        raise TrainsrvError(
            f"job {job_id} cannot be retried: another job with dedupe key {key!r} is queued or running"
        ) from None
    if updated is None:
        state = get(conn, job_id)["state"]
        raise TrainsrvError(f"job {job_id} is {state}; only failed or cancelled jobs can be retried")
