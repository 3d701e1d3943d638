"""The slots of one ``trainsrv serve`` process: a main lane and a maintenance lane.

One worker runs one job at a time, so a long training job would stop validation, event
detection and experience building for as long as it trains. ``serve`` therefore runs two
workers against the same queue, each with its own worker id (``<id>`` and ``<id>/maintenance``),
connection, heartbeat thread and LISTEN connection:

* the **main lane** (the calling thread) claims any kind — training, replay, and light jobs when
  it is free;
* the **maintenance lane** (a background thread) claims only ``maintenance_kinds``, so light
  work always has a slot. It also runs the scheduler and the rescuer, which must not wait
  behind a training job either.

Claims stay single-row ``FOR UPDATE SKIP LOCKED`` statements, so the lanes (and any number of
other trainers) never run one job twice. ``stop()`` stops both; each finishes or hands back its
current job. With ``maintenance_kinds`` empty there is only the main lane, which then also
schedules and rescues.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from app.config import Settings
from app.jobs import transitions
from app.jobs.worker import Worker, default_worker_id

log = logging.getLogger(__name__)


def maintenance_kinds(settings: Settings) -> tuple[str, ...]:
    """The kinds the maintenance lane claims, from ``settings.maintenance_kinds``."""
    return tuple(k.strip() for k in settings.maintenance_kinds.split(",") if k.strip())


class Lanes:
    """The main worker and, when ``maintenance_kinds`` is set, the maintenance worker."""

    def __init__(
        self,
        engine: sa.Engine,
        settings: Settings,
        worker_id: str | None = None,
        schedule: bool = True,
        maintenance: bool = True,
    ):
        base = worker_id or default_worker_id()
        light = maintenance_kinds(settings) if maintenance else ()
        self.main = Worker(engine, settings, base, schedule=schedule and not light, rescue=not light)
        self.maintenance = (
            # The main lane watches the schema (one log line); when it stops, run() stops this lane too.
            Worker(engine, settings, f"{base}/maintenance", schedule=schedule, kinds=light, watch_schema=False)
            if light
            else None
        )
        self._thread: threading.Thread | None = None

    @property
    def workers(self) -> list[Worker]:
        return [w for w in (self.main, self.maintenance) if w is not None]

    def stop(self) -> None:
        """Ask every lane to exit after its current job (safe from a signal handler)."""
        for worker in self.workers:
            worker.stop()

    @property
    def stopping(self) -> bool:
        return self.main.stopping

    @property
    def schema_problem(self) -> str | None:
        """Why a lane stopped claiming when the schema left the code's head (None: it did not)."""
        return next((w.schema_problem for w in self.workers if w.schema_problem), None)

    @property
    def in_handler(self) -> bool:
        """True while the main lane (the signal-handling thread) runs a handler."""
        return self.main.in_handler

    def run(self) -> int:
        """Run until stopped; the jobs both lanes ran."""
        if self.maintenance is not None:
            self._thread = threading.Thread(target=self._run_maintenance, name="maintenance-lane", daemon=True)
            self._thread.start()
        try:
            self.main.run()
        finally:
            self.stop()
            if self._thread is not None:
                self._thread.join()
        return sum(w.processed for w in self.workers)

    def _run_maintenance(self) -> None:
        try:
            self.maintenance.run()
        except BaseException as exc:  # noqa: BLE001 - the process must not run on with half its lanes
            transitions.emit("worker.lane_failed", worker=self.maintenance.id, error=f"{type(exc).__name__}: {exc}")
            log.exception("maintenance lane failed; stopping the trainer")
            self.main.stop()
