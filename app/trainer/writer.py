"""The background writer: one thread that commits steps, gradient blobs and checkpoints, in order.

The training loop ``submit``s records; the writer drains whatever is queued (up to
``max_batch`` records) and writes it in ONE transaction: gradient chunks by binary COPY, then
the step rows, then any checkpoint. So

* a step row is never visible without all of its gradient blobs (they commit together);
* a checkpoint at step c is never visible before every step <= c (records keep their order).

Writer transactions use ``synchronous_commit = off``: after a database crash the newest fraction
of a second of steps may be missing, exactly as if the trainer had died then (the session resumes
from its last checkpoint); the session's final status update is a normal, durable commit.

The queue is bounded: ``submit`` blocks when it is full (back-pressure). A failed write is never
swallowed: the error is re-raised to the training loop by the next ``submit`` / ``flush`` /
``close``, and the records after it are discarded (their slots released) so the loop cannot
deadlock waiting for a slot.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import Callable

import sqlalchemy as sa

from app.db import models, queries
from app.errors import TrainsrvError
from app.trainer import blobs
from app.trainer.capture import CapturedGradients

log = logging.getLogger(__name__)

_STOP = object()
COPY_TYPES = ["int8", "int4", "text", "int4", "int4", "text", "int4[]", "text", "int4", "bytea", "bytea"]


class WriterError(TrainsrvError):
    """The background writer could not store a record; the session must not continue."""


@dataclasses.dataclass
class StepRecord:
    """One optimizer step as stored in ``training_steps`` (plus its captured gradients)."""

    step: int
    loss_total: float
    loss_components: dict
    grad_norm: float | None
    learning_rate: float
    batch_ids: list[int]
    batch_profitability: dict
    timings_ms: dict
    gradients: CapturedGradients | None = None


@dataclasses.dataclass
class CheckpointRecord:
    """A serialized checkpoint; ``on_commit(conn)`` runs in the same transaction."""

    step: int
    kind: str
    params_hash: bytes
    optimizer_hash: bytes
    content_hash: bytes
    state: bytes
    on_commit: Callable[[sa.Connection], None] | None = None


@dataclasses.dataclass
class WriterStats:
    records: int = 0
    chunks: int = 0
    blob_bytes: int = 0
    transactions: int = 0
    write_s: float = 0.0


class BackgroundWriter:
    """Writes the records of one session from a background thread."""

    def __init__(self, engine: sa.Engine, session_id: int, *, max_pending: int = 8, max_batch: int = 16,
                 chunk_bytes: int = blobs.DEFAULT_CHUNK_BYTES):
        self.engine = engine
        self.session_id = session_id
        self.max_batch = max_batch
        self.chunk_bytes = chunk_bytes
        self.stats = WriterStats()
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"grad-writer-{session_id}", daemon=True)
        self._thread.start()

    def submit(self, record: StepRecord | CheckpointRecord) -> None:
        """Queue a record, blocking while the queue is full; raises if an earlier write failed."""
        if self._error is not None and isinstance(record, StepRecord) and record.gradients is not None:
            record.gradients.release()  # refused: give its slot back so capture cannot deadlock
        self._raise_if_failed()
        self._queue.put(record)

    def flush(self) -> None:
        """Wait until everything submitted so far is committed; raises WriterError on failure."""
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Flush and stop the thread (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise WriterError(f"gradient writer for session {self.session_id} failed: {self._error}") from self._error

    def _run(self) -> None:
        conn: sa.Connection | None = None
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    conn = self._write_or_discard(conn, batch)
                for _ in batch:
                    self._queue.task_done()
                if stop:
                    self._queue.task_done()
                    return
        finally:
            if conn is not None:
                conn.close()

    def _next_batch(self) -> tuple[list, bool]:
        item = self._queue.get()
        if item is _STOP:
            return [], True
        batch = [item]
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _write_or_discard(self, conn: sa.Connection | None, batch: list) -> sa.Connection | None:
        try:
            if self._error is None:
                conn = conn or self.engine.connect()
                started = time.perf_counter()
                self._write(conn, batch)
                self.stats.write_s += time.perf_counter() - started
        except BaseException as exc:  # noqa: BLE001 - surfaced to the training loop, never lost
            log.error("session %s: writing steps %s failed: %s", self.session_id,
                      [r.step for r in batch], exc)
            self._error = exc
        finally:
            for record in batch:
                if isinstance(record, StepRecord) and record.gradients is not None:
                    record.gradients.release()
        return conn

    def _write(self, conn: sa.Connection, batch: list) -> None:
        with conn.begin():
            # A database crash may lose the last fraction of a second of commits, but never splits a
            # step from its gradients nor reorders them; finish / fail commit synchronously, which
            # flushes everything before them.
            conn.execute(queries.get("trainer.async_commit"))
            steps = [r for r in batch if isinstance(r, StepRecord)]
            counts = self._copy_blobs(conn, steps)
            # Records are written in submission order so a checkpoint follows the steps before it.
            pending_steps: list[dict] = []
            for record in batch:
                if isinstance(record, StepRecord):
                    pending_steps.append(self._step_row(record, counts.get(record.step, 0)))
                    continue
                self._insert_steps(conn, pending_steps)
                pending_steps = []
                self._insert_checkpoint(conn, record)
            self._insert_steps(conn, pending_steps)
        self.stats.records += len(batch)
        self.stats.transactions += 1

    def _copy_blobs(self, conn: sa.Connection, steps: list[StepRecord]) -> dict[int, int]:
        counts: dict[int, int] = {}
        captured = [r for r in steps if r.gradients is not None]
        if not captured:
            return counts
        cursor = conn.connection.driver_connection.cursor()
        with cursor, cursor.copy(queries.sql("trainer.copy_gradient_blobs")) as copy:
            copy.set_types(COPY_TYPES)
            for record in captured:
                chunks = record.gradients.encode(self.chunk_bytes)
                counts[record.step] = len({c.param_name for c in chunks})
                for c in chunks:
                    copy.write_row((self.session_id, record.step, c.param_name, c.chunk_index, c.chunk_count,
                                    c.dtype, list(c.shape), c.codec, len(c.data), c.checksum, c.data))
                    self.stats.chunks += 1
                    self.stats.blob_bytes += len(c.data)
        return counts

    def _step_row(self, r: StepRecord, gradients_stored: int) -> dict:
        return {"session_id": self.session_id, "step": r.step, "loss_total": r.loss_total,
                "loss_components": r.loss_components, "grad_norm": r.grad_norm, "learning_rate": r.learning_rate,
                "batch_ids": list(r.batch_ids), "batch_profitability": r.batch_profitability,
                "timings_ms": r.timings_ms, "gradients_stored": gradients_stored}

    def _insert_steps(self, conn: sa.Connection, rows: list[dict]) -> None:
        if rows:
            conn.execute(sa.insert(models.TrainingStep), rows)

    def _insert_checkpoint(self, conn: sa.Connection, r: CheckpointRecord) -> None:
        conn.execute(sa.insert(models.Checkpoint).values(
            session_id=self.session_id, step=r.step, kind=r.kind, params_hash=r.params_hash,
            optimizer_hash=r.optimizer_hash, content_hash=r.content_hash, byte_length=len(r.state), state=r.state))
        if r.on_commit is not None:
            r.on_commit(conn)
