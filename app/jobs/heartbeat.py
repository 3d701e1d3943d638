"""Heartbeats from a background thread while a handler runs.

The worker's thread is busy inside the handler (a training loop may not yield for minutes), so
a separate thread refreshes ``jobs.heartbeat_at`` every ``heartbeat_interval_s``. When the
refresh finds the row no longer ours (cancelled, or rescued after we stalled) it flags the job
as lost, which the handler sees through ``ctx.should_stop()``. A database outage is not a loss:
the beat is retried at the next interval.
"""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa

from app.jobs import queue

log = logging.getLogger(__name__)


class Heartbeater:
    """Beats for the job set with ``watch()`` until ``unwatch()``; one thread per worker."""

    def __init__(self, engine: sa.Engine, worker: str, interval_s: float):
        self._engine, self._worker, self._interval_s = engine, worker, interval_s
        self._cond = threading.Condition()
        self._job: queue.ClaimedJob | None = None
        self._lost = False
        self._closed = False
        self._last_beat = 0.0
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{worker}", daemon=True)
        self._thread.start()

    def watch(self, job: queue.ClaimedJob) -> None:
        # No wake-up here: a no-op job must not cost a thread switch. The thread looks at the
        # watched job every interval, so the first beat comes 1-2 intervals after the claim
        # (which set heartbeat_at itself); heartbeat_timeout_s must stay well above that.
        self._last_beat, self._lost, self._job = time.monotonic(), False, job

    def unwatch(self) -> None:
        self._job = None

    @property
    def lost(self) -> bool:
        """True once a beat found the watched job no longer this worker's."""
        return self._lost

    def beat_now(self) -> None:
        """A handler's explicit heartbeat: beat unless one went out in the last half interval."""
        job = self._job
        if job is not None and time.monotonic() - self._last_beat >= self._interval_s / 2:
            self._beat(job)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=self._interval_s + 5)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(timeout=self._interval_s)
                if self._closed:
                    return
            job = self._job
            if job is not None and time.monotonic() - self._last_beat >= self._interval_s:
                self._beat(job)

    def _beat(self, job: queue.ClaimedJob) -> None:
        self._last_beat = time.monotonic()
        try:
            with self._engine.begin() as conn:
                mine = queue.heartbeat(conn, job, self._worker)
        except sa.exc.DBAPIError as exc:
            log.warning("heartbeat for job %s failed, retrying: %s", job.id, str(exc.orig or exc).strip())
            return
        if not mine and self._job is job:
            self._lost = True
