"""SessionRecorder: the model-agnostic recording layer every trainer (CNN, RL, replay) uses.

Lifecycle::

    rec = SessionRecorder.start(engine, SessionSpec(model_kind="cnn", model_name=..., config=...,
                                                    seed=..., device="cpu", capture=CapturePolicy()))
    rec.attach(model)                                   # which parameters are captured
    rec.checkpoint(0, "start", model, optimizer, extra)
    for step in range(1, n + 1):                        # steps are numbered from 1
        ...  # see app.recording.step.train_step: backward, clip, rec.capture(step), optimizer.step()
        rec.record_step(StepRecord(...))                # queued to the background writer
        if rec.due(step): rec.checkpoint(step, "periodic", model, optimizer, extra)
    rec.finish(metrics=..., training_value=..., convergence=tracker)

Guarantees:

* rows are written by one background writer (``app.recording.writer``), in order, a step together
  with its gradient blobs; a checkpoint at step c is visible only after every step <= c;
* while a session is being trained its process holds a PostgreSQL advisory lock on it; the lock
  vanishes with the process, so a killed session can be told apart from a live one;
* ``fail`` marks the session ``failed``, ``interrupt`` checkpoints and marks it ``interrupted``;
  a killed process leaves it ``running`` without a lock holder. All three are resumable:
  ``SessionRecorder.resume`` takes the lock, deletes the steps after the last checkpoint (their
  updates were lost with the process) and returns that checkpoint, so the trainer continues at
  ``checkpoint.step + 1`` and no step number is ever stored twice.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import sqlalchemy as sa
import torch

from app import __version__, progress_log
from app.db import models, queries
from app.errors import TrainsrvError, ValidationError
from app.recording import checkpoints, sessions
from app.recording.capture import CapturedGradients, GradientCapture
from app.recording.convergence import ConvergenceTracker
from app.recording.policy import CapturePolicy, WriterOptions
from app.recording.writer import BackgroundWriter, CheckpointRecord, StepRecord

log = logging.getLogger(__name__)


class SessionBusy(TrainsrvError):
    """Another live process is training this session."""


@dataclasses.dataclass
class SessionSpec:
    """What a new session row records; ``config`` must hold everything needed to rebuild it."""

    model_kind: str
    model_name: str
    config: dict
    seed: int
    device: str
    capture: CapturePolicy = dataclasses.field(default_factory=CapturePolicy)
    checkpoint_every: int = 50
    job_id: int | None = None
    parent_session_id: int | None = None
    init_session_id: int | None = None  # the checkpoint the weights started from (--init)
    init_checkpoint_id: int | None = None


class SessionRecorder:
    """Records one session's steps, gradients and checkpoints (see the module docstring)."""

    def __init__(
        self,
        engine: sa.Engine,
        session_id: int,
        capture: CapturePolicy,
        checkpoint_every: int,
        lock_conn: sa.Connection,
        options: WriterOptions | None = None,
    ):
        if checkpoint_every < 1:
            raise ValidationError("checkpoint_every", f"must be >= 1, got {checkpoint_every}")
        self.engine = engine
        self.session_id = session_id
        self.policy = capture
        self.checkpoint_every = checkpoint_every
        self.options = options or WriterOptions()
        self._lock_conn = lock_conn
        self._capture: GradientCapture | None = None
        self.writer = BackgroundWriter(
            engine, session_id, max_pending=self.options.max_pending, max_batch=self.options.max_batch
        )

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def start(cls, engine: sa.Engine, spec: SessionSpec, options: WriterOptions | None = None) -> SessionRecorder:
        """Insert a ``running`` session row, lock it and start its writer."""
        config = dict(spec.config, capture=spec.capture.to_config(), checkpoint_every=spec.checkpoint_every)
        lock_conn = engine.connect()
        try:
            session_id = sessions.insert(
                lock_conn,
                model_kind=spec.model_kind,
                model_name=spec.model_name,
                config=config,
                seed=spec.seed,
                torch_version=torch.__version__,
                trainsrv_version=__version__,
                device=spec.device,
                status="running",
                capture_policy=spec.capture.name,
                replay_exact=spec.capture.replay_exact,
                job_id=spec.job_id,
                parent_session_id=spec.parent_session_id,
                init_session_id=spec.init_session_id,
                init_checkpoint_id=spec.init_checkpoint_id,
            )
            lock_conn.commit()
            _lock(lock_conn, session_id)
        except BaseException:
            _release(lock_conn, None)
            raise
        log.info(
            "session %s started (%s %s, capture %s)", session_id, spec.model_kind, spec.model_name, spec.capture.name
        )
        return cls(engine, session_id, spec.capture, spec.checkpoint_every, lock_conn, options)

    @classmethod
    def resume(
        cls, engine: sa.Engine, session_id: int, options: WriterOptions | None = None
    ) -> tuple[SessionRecorder, checkpoints.StoredCheckpoint]:
        """Take over a failed / interrupted / orphaned session from its last checkpoint.

        Returns the recorder and the checkpoint to restore; training continues at
        ``checkpoint.step + 1``. Raises SessionBusy when a live process still trains it.
        """
        lock_conn = engine.connect()
        try:
            _lock(lock_conn, session_id)
        except BaseException:
            lock_conn.close()
            raise
        try:
            row = sessions.get(lock_conn, session_id)
            if row.status not in sessions.RESUMABLE:
                raise TrainsrvError(
                    f"session {session_id} is {row.status}; only {', '.join(sessions.RESUMABLE)} "
                    "sessions can be resumed"
                )
            if row.pruned is not None:  # retention dropped its gradient partition: new steps have nowhere to go
                raise TrainsrvError(
                    f"session {session_id} cannot be resumed: retention pruned its "
                    f"{'gradients' if row.pruned == 'gradients' else 'gradients and checkpoints'} "
                    f"({row.pruned_reason})"
                )
            ckpt = checkpoints.load(lock_conn, session_id)
            dropped = _truncate_after(lock_conn, session_id, ckpt.step)
            sessions.mark_resumed(lock_conn, session_id, dropped=dropped, step=ckpt.step)
            lock_conn.commit()
        except BaseException:
            lock_conn.rollback()
            _release(lock_conn, session_id)
            raise
        log.info("session %s resumed from step %s (%s later steps discarded)", session_id, ckpt.step, dropped)
        capture = CapturePolicy.from_config(row.config.get("capture", {"name": row.capture_policy}))
        recorder = cls(engine, session_id, capture, int(row.config.get("checkpoint_every", 50)), lock_conn, options)
        return recorder, ckpt

    # -- per step -----------------------------------------------------------------------------

    def attach(self, model: torch.nn.Module) -> None:
        """Capture the gradients of ``model``'s trainable parameters from now on."""
        self._capture = GradientCapture(model.named_parameters(), self.policy, slots=self.options.slots)

    def capture(self, step: int) -> CapturedGradients | None:
        """Copy this step's gradients off the device (call after clipping, before optimizer.step)."""
        if self._capture is None:
            raise RuntimeError("SessionRecorder.attach(model) must be called before capture")
        return self._capture.capture(step)

    def record_step(self, record: StepRecord) -> None:
        """Queue the step row (and its captured gradients) for the writer."""
        self.writer.submit(record)
        progress_log.step(self.session_id, record)

    def due(self, step: int) -> bool:
        """Whether a periodic checkpoint is due after ``step``."""
        return step % self.checkpoint_every == 0

    def checkpoint(
        self,
        step: int,
        kind: str,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        extra: dict | None = None,
        on_commit: Callable[[sa.Connection], None] | None = None,
    ) -> bytes:
        """Snapshot now and queue it; ``on_commit(conn)`` runs in the checkpoint's transaction.

        Returns the params hash of the snapshot.
        """
        snap = checkpoints.snapshot(step, model, optimizer, extra)
        self.writer.submit(
            CheckpointRecord(
                step, kind, snap.params_hash, snap.optimizer_hash, snap.content_hash, snap.state, on_commit
            )
        )
        return snap.params_hash

    # -- closing --------------------------------------------------------------------------

    def progress(self, tracker: ConvergenceTracker, metrics: dict | None = None) -> Callable[[sa.Connection], None]:
        """An ``on_commit`` hook that stores convergence state (and metrics) with a checkpoint."""
        values = _convergence_values(tracker)
        if metrics is not None:
            values["metrics"] = metrics

        def write(conn: sa.Connection) -> None:
            conn.execute(sessions.update(self.session_id, **values))

        return write

    def mark_trained_through(self) -> None:
        """Wait for every write, then store the latest data the recorded batches depend on
        (``session_trained_through``); the contamination check reads it (docs/models.md)."""
        self._close_writer()
        self._set(trained_through=sa.func.session_trained_through(self.session_id))

    def finish(self, *, metrics: dict, training_value: float | None, tracker: ConvergenceTracker) -> None:
        """Wait for every write, then mark the session ``succeeded``."""
        self._close_writer()
        self._set(
            status="succeeded",
            metrics=metrics,
            training_value=training_value,
            error=None,
            ended_at=sa.func.now(),
            **_convergence_values(tracker),
        )
        self.close()

    def interrupt(self, metrics: dict, tracker: ConvergenceTracker) -> None:
        """Mark the session ``interrupted`` (resumable) after its last checkpoint was queued."""
        self._close_writer()
        self._set(status="interrupted", metrics=metrics, ended_at=sa.func.now(), **_convergence_values(tracker))
        self.close()

    def fail(self, error: BaseException | str) -> None:
        """Mark the session ``failed`` (resumable); what was committed stays consistent."""
        try:
            self.writer.close()
        except TrainsrvError as exc:
            log.error("session %s: writer failed too: %s", self.session_id, exc)
        message = str(error) or type(error).__name__
        self._set(status="failed", error=message[:2000], ended_at=sa.func.now())
        self.close()

    def guarded(self, body: Callable[[], dict]) -> dict:
        """Run ``body``; any failure marks the session failed (resumable) before propagating."""
        try:
            return body()
        except BaseException as exc:
            log.error("session %s failed: %s", self.session_id, exc)
            self.fail(exc)
            raise

    def close(self) -> None:
        """Release the lock and connections (the session row keeps its status)."""
        _release(self._lock_conn, self.session_id)

    def _close_writer(self) -> None:
        self.writer.close()

    def _set(self, **values) -> None:
        self._lock_conn.execute(sessions.update(self.session_id, **values))
        self._lock_conn.commit()


def _convergence_values(tracker: ConvergenceTracker) -> dict:
    return {"best_loss": tracker.best_loss, "plateau_steps": tracker.plateau_steps, "converged": tracker.converged}


def _lock(conn: sa.Connection, session_id: int) -> None:
    got = conn.execute(queries.get("trainer.try_lock_session"), {"session_id": session_id}).scalar_one()
    conn.commit()  # the lock is session-level; do not sit idle in a transaction
    if not got:
        raise SessionBusy(f"session {session_id} is being trained by a live process")


def _release(conn: sa.Connection, session_id: int | None) -> None:
    """Unlock (the pool keeps the connection, and with it a session-level lock) and close."""
    if conn.closed:
        return
    try:
        if session_id is not None:
            conn.execute(queries.get("trainer.unlock_session"), {"session_id": session_id})
            conn.commit()
    finally:
        conn.close()


def _truncate_after(conn: sa.Connection, session_id: int, step: int) -> int:
    steps, blobs = models.TrainingStep.__table__, models.GradientBlob.__table__
    conn.execute(sa.delete(blobs).where(blobs.c.session_id == session_id, blobs.c.step > step))
    result = conn.execute(sa.delete(steps).where(steps.c.session_id == session_id, steps.c.step > step))
    return result.rowcount
