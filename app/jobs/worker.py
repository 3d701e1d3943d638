"""The trainer's loop: claim one job, run its handler, record what happened; repeat.

* The claim is one statement committed before the handler starts, so the job is visibly
  ``running`` (and owned) for its whole run; a background thread heartbeats it meanwhile.
* Idle, the worker waits on LISTEN/NOTIFY with the poll interval as timeout (the fallback).
* Between jobs it rescues jobs whose worker stopped heartbeating and runs the scheduler.
* Unknown kinds, bad parameters, a handler's own ``ValidationError`` and a result that is not
  JSON fail the job at once (a retry would fail the same way); other exceptions fail the
  attempt and retry with backoff until ``max_attempts``.
* ``stop()`` (from a signal) lets the current handler finish or hand the job back
  (``registry.Interrupted``); then the loop exits.
* Losing the database never kills the worker: every database step backs off and retries.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa

from app.config import Settings, get_settings
from app.errors import ValidationError
from app.jobs import queue, registry, transitions
from app.jobs.heartbeat import Heartbeater
from app.jobs.listener import Listener
from app.jobs.scheduler import Scheduler

DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
# How often a running trainer checks that the database is still at the migration head it started on.
SCHEMA_CHECK_INTERVAL_S = 2.0
MAX_ERROR_CHARS = 4000
_UNAVAILABLE = object()


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a handler run ended: ``succeeded`` (with result), ``failed`` (with error) or ``interrupted``."""

    state: str
    result: Any = None
    error: str | None = None
    retryable: bool = True


def default_worker_id() -> str:
    """Host, pid and a random suffix: unique even when pids repeat across containers."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def describe(exc: BaseException) -> str:
    """``Type: message`` then the traceback, trimmed to what fits in ``jobs.last_error``."""
    text = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))
    return text if len(text) <= MAX_ERROR_CHARS else text[:200] + "\n...\n" + text[-(MAX_ERROR_CHARS - 205) :]


class Worker:
    """One job at a time against ``engine``; ``run()`` until stopped, out of work (once) or max_jobs."""

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings | None = None,
        worker_id: str | None = None,
        scheduler: Scheduler | None = None,
        schedule: bool = True,
        kinds: tuple[str, ...] | None = None,
        rescue: bool = True,
        watch_schema: bool = True,
    ):
        self.engine = engine
        self.settings = settings or get_settings()
        self.id = worker_id or default_worker_id()
        self.scheduler = (scheduler or Scheduler(self.settings)) if schedule else None
        self.kinds = kinds  # None: any kind; else this worker (a lane) claims only these
        self.rescues = rescue
        self.watches_schema = watch_schema  # one lane of a process watches; it stops the others (app.jobs.lanes)
        self.processed = 0
        self._stop = threading.Event()
        self._in_handler = False
        self._hb: Heartbeater | None = None
        self._conn: sa.Connection | None = None
        self._down_since: float | None = None
        self._backoff_s = RECONNECT_MIN_S
        self._next_rescue = self._next_schedule = self._next_schema_check = 0.0
        self._heads: set[str] | None = None
        # Why the worker stopped claiming: the schema left the head (a downgrade or a newer upgrade).
        self.schema_problem: str | None = None

    # -- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to exit after the current job (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def in_handler(self) -> bool:
        """True while a handler is running (a second signal may then interrupt it)."""
        return self._in_handler

    def run(self, max_jobs: int | None = None, once: bool = False) -> int:
        """Work until stopped, until ``max_jobs`` jobs ran, or (``once``) until none is ready; jobs run."""
        registry.load_handlers()  # a handler module that cannot be imported stops us before any claim
        listener = Listener(self.engine, self.settings.db_connect_timeout_s)
        self._hb = Heartbeater(self.engine, self.id, self.settings.heartbeat_interval_s)
        transitions.emit("worker.started", worker=self.id, pid=os.getpid(), once=once, max_jobs=max_jobs)
        try:
            while not self.stopping and (max_jobs is None or self.processed < max_jobs):
                self._maintain()
                if self.stopping:
                    break
                job = self._db(self._claim)
                if isinstance(job, queue.ClaimedJob):
                    self._execute(job)
                elif job is None and once:
                    break
                elif job is None:
                    self._db(lambda: self._idle(listener))
        finally:
            self._hb.close()
            listener.close()
            self._drop_connection()
            transitions.emit("worker.stopped", worker=self.id, processed=self.processed)
        return self.processed

    # -- one job ----------------------------------------------------------------------------

    def _claim(self) -> queue.ClaimedJob | None:
        return self._on_loop_connection(lambda conn: queue.claim(conn, self.id, self.kinds))

    def _execute(self, job: queue.ClaimedJob) -> None:
        transitions.emit("job.started", **self._fields(job), priority=job.priority)
        started = time.monotonic()
        # Beat until the outcome is recorded: a slow write must not let the job be rescued.
        self._hb.watch(job)
        try:
            outcome = self._run_handler(job)
            self._record(job, outcome, time.monotonic() - started)
        finally:
            self._hb.unwatch()
        self.processed += 1

    def _run_handler(self, job: queue.ClaimedJob) -> Outcome:
        try:
            handler = registry.get(job.kind)
            params = handler.validate(job.params)
        except ValidationError as exc:
            return Outcome("failed", error=str(exc), retryable=False)
        ctx = registry.JobContext(
            self.engine, self.settings, job.id, job.attempt, heartbeat=self._hb.beat_now, should_stop=self._should_stop
        )
        try:
            self._in_handler = True  # inside the try: a second signal may raise Interrupted from here on
            result = handler.fn(ctx, params)
        except registry.Interrupted:
            return Outcome("interrupted")
        except ValidationError as exc:
            return Outcome("failed", error=str(exc), retryable=False)
        except Exception as exc:  # noqa: BLE001 - any handler failure is recorded on the job
            return Outcome("failed", error=describe(exc))
        finally:
            self._in_handler = False
        try:
            queue.encode_result(result)
        except ValidationError as exc:
            return Outcome("failed", error=str(exc), retryable=False)
        return Outcome("succeeded", result=result)

    def _should_stop(self) -> bool:
        return self.stopping or self._hb.lost

    def _record(self, job: queue.ClaimedJob, outcome: Outcome, duration_s: float) -> None:
        fields = {**self._fields(job), "duration_s": round(duration_s, 6)}
        if outcome.error:
            fields["error"] = outcome.error.splitlines()[0]
        written = self._persist(lambda conn: self._write(conn, job, outcome))
        if written is _UNAVAILABLE:
            transitions.emit("job.abandoned", **fields, reason="database unavailable at shutdown; left to rescue")
        elif not written:
            transitions.emit(
                "job.lost", **fields, outcome=outcome.state, reason="the job was cancelled or rescued while it ran"
            )
        elif isinstance(written, queue.FailResult) and written.state == "queued":
            transitions.emit("job.retry_scheduled", **fields, run_after=written.run_after)
        elif isinstance(written, queue.FailResult):
            transitions.emit("job.failed", **fields, retryable=outcome.retryable)
        else:
            transitions.emit("job.released" if outcome.state == "interrupted" else "job.succeeded", **fields)

    def _write(self, conn: sa.Connection, job: queue.ClaimedJob, outcome: Outcome) -> Any:
        if outcome.state == "succeeded":
            return queue.finish(conn, job, self.id, outcome.result)
        if outcome.state == "interrupted":
            return queue.release(conn, job, self.id)
        return queue.fail(conn, job, self.id, outcome.error, retryable=outcome.retryable, settings=self.settings)

    def _persist(self, write: Callable[[sa.Connection], Any]) -> Any:
        # The handler's work is done; keep trying to record it until the database is back,
        # unless we are shutting down (then the rescuer will re-run the job).
        while True:
            result = self._db(lambda: self._on_loop_connection(write))
            if result is not _UNAVAILABLE or self.stopping:
                return result

    def _on_loop_connection(self, work: Callable[[sa.Connection], Any]) -> Any:
        # The loop keeps one connection (no pool checkout and pre-ping per claim or finish), in
        # autocommit: every queue statement is its own transaction, committed in its one round trip.
        if self._conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if not self.settings.job_synchronous_commit:
                conn.execute(sa.text("SET synchronous_commit = off"))  # see Settings.job_synchronous_commit
            self._conn = conn
        return work(self._conn)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except sa.exc.SQLAlchemyError:
                pass  # already broken: nothing to give back

    def _fields(self, job: queue.ClaimedJob) -> dict:
        return {
            "job_id": job.id,
            "kind": job.kind,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "worker": self.id,
        }

    # -- housekeeping -----------------------------------------------------------------------

    def _maintain(self) -> None:
        now = time.monotonic()
        if self.watches_schema and now >= self._next_schema_check:
            self._next_schema_check = now + SCHEMA_CHECK_INTERVAL_S
            self._db(self._check_schema)
        if self.stopping:
            return
        if self.rescues and now >= self._next_rescue:
            self._next_rescue = now + max(0.05, self.settings.heartbeat_timeout_s / 2)
            self._db(self._rescue)
        if self.scheduler is not None and now >= self._next_schedule:
            self._next_schedule = now + self.settings.schedule_check_interval_s
            self._db(self._schedule)

    def _check_schema(self) -> None:
        """Stop claiming, with one log line, once the database is no longer at the code's migration head:
        jobs run against another schema would fail and burn their retries."""
        from app.db import migrate

        if self._heads is None:
            self._heads = migrate.head_revisions()
        current = self._on_loop_connection(migrate.connection_revisions)
        if current != self._heads:
            have = ", ".join(sorted(current)) or "empty (never migrated)"
            self.schema_problem = (
                f"database schema is at {have}, this trainer's code expects "
                f"{', '.join(sorted(self._heads))}; stopped claiming jobs"
            )
            transitions.emit("worker.schema_changed", worker=self.id, error=self.schema_problem)
            self.stop()

    def _rescue(self) -> None:
        rescued = self._on_loop_connection(lambda conn: queue.rescue(conn, self.settings.heartbeat_timeout_s))
        for row in rescued:
            transitions.emit(
                "job.rescued",
                job_id=row["id"],
                kind=row["kind"],
                state=row["state"],
                attempts=row["attempts"],
                lost_by=row["lost_by"],
                worker=self.id,
            )

    def _schedule(self) -> None:
        try:
            self._on_loop_connection(self.scheduler.tick)
        except DB_ERRORS:
            raise
        except sa.exc.SQLAlchemyError as exc:
            # A broken rule must not stop the trainer from working the queue.
            transitions.emit("scheduler.error", worker=self.id, error=str(exc).splitlines()[0])

    def _idle(self, listener: Listener) -> None:
        timeout = self._idle_timeout()
        if self.settings.job_listen:
            listener.wait(timeout)
        else:
            self._stop.wait(timeout)

    def _idle_timeout(self) -> float:
        until_maintenance = min(
            self._next_rescue if self.rescues else float("inf"), self._next_schedule if self.scheduler else float("inf")
        )
        return max(0.0, min(self.settings.poll_interval_s, until_maintenance - time.monotonic()))

    def _db(self, step: Callable[[], Any]) -> Any:
        """Run a database step; on a connection failure back off (interruptibly) and return _UNAVAILABLE."""
        try:
            result = step()
        except DB_ERRORS as exc:
            self._drop_connection()
            self._db_failed(exc)
            return _UNAVAILABLE
        if self._down_since is not None:
            transitions.emit("worker.db_restored", worker=self.id, down_s=round(time.monotonic() - self._down_since, 3))
            self._down_since, self._backoff_s = None, RECONNECT_MIN_S
        return result

    def _db_failed(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            transitions.emit("worker.db_unavailable", worker=self.id, error=reason[0] if reason else type(exc).__name__)
        else:
            self._backoff_s = min(self._backoff_s * 2, RECONNECT_MAX_S)
        self._stop.wait(self._backoff_s)
