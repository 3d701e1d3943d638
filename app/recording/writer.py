"""The background writer: one thread that commits steps, gradient blobs and checkpoints, in order.

The training loop ``submit``s records; the writer takes them from the queue and writes them in
batches, ONE transaction per batch:

1. every gradient chunk of the batch's steps in one binary COPY, streamed as the steps arrive;
2. the batch's step rows in a second binary COPY;
3. the checkpoint that closes the batch, if any, and its ``on_commit`` hook.

So

* a step row is never visible without all of its gradient blobs (they commit together);
* a checkpoint at step c is never visible before every step <= c (records keep their order, and
  a checkpoint always ends its batch).

A batch grows while records keep coming: it ends at ``max_batch`` records, ``max_batch_bytes``
of gradients, ``max_batch_s`` seconds after its first record, at a checkpoint, or when
``flush`` / ``close`` asks for a commit. Big batches amortise the per-transaction round trips
when the database is the bottleneck; the time bound keeps the newest committed step recent
when training is the bottleneck.

A step's capture slot is released as soon as its chunks are in the COPY stream (psycopg has
copied them), not at commit: the training loop can fill the slot again while the batch is
still being written. Memory stays bounded by the slots, the queue (``max_pending`` records
that point into slots) and psycopg's COPY buffer.

Writer transactions use ``synchronous_commit = off``: after a database crash the newest fraction
of a second of steps may be missing, exactly as if the trainer had died then (the session resumes
from its last checkpoint); the session's final status update is a normal, durable commit.

The queue is bounded: ``submit`` blocks when it is full (back-pressure). A failed write is never
swallowed: the error is re-raised to the training loop by the next ``submit`` / ``flush`` /
``close``, and the records after it are discarded (their slots released) so the loop cannot
deadlock waiting for a slot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable

import psycopg
import sqlalchemy as sa
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import Format

from app import metrics
from app.db import models, queries
from app.errors import TrainsrvError
from app.recording import blobs
from app.recording.capture import CapturedGradients
from app.recording.policy import DEFAULT_PIPELINE

log = logging.getLogger(__name__)

_STOP = object()  # close(): commit what was taken, then end the thread
_FLUSH = object()  # flush(): commit what was taken now instead of waiting for more records
# ``shape`` (7th) is sent as int4[] bytes pre-dumped once per shape (see _int4_array), hence "bytea".
BLOB_COPY_TYPES = ["int8", "int4", "text", "int4", "int4", "text", "bytea", "text", "int4", "bytea", "bytea"]
STEP_COPY_TYPES = ["int8", "int4", "float8", "jsonb", "float8", "float8", "int8[]", "jsonb", "jsonb", "int4"]
_INT4_ARRAY_OID = psycopg.postgres.types["int4"].array_oid
DEFAULT_MAX_BATCH_BYTES = 64 << 20
DEFAULT_MAX_BATCH_S = 0.2


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
    """Counters of one writer; ``write_s`` excludes the time spent waiting for records."""

    records: int = 0
    chunks: int = 0
    blob_bytes: int = 0
    transactions: int = 0
    write_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    """When a batch (one transaction) stops taking records."""

    records: int = 16
    gradient_bytes: int = DEFAULT_MAX_BATCH_BYTES
    seconds: float = DEFAULT_MAX_BATCH_S


class BackgroundWriter:
    """Writes the records of one session from a background thread."""

    def __init__(
        self,
        engine: sa.Engine,
        session_id: int,
        *,
        max_pending: int = DEFAULT_PIPELINE.max_pending,
        max_batch: int = DEFAULT_PIPELINE.max_batch,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_batch_s: float = DEFAULT_MAX_BATCH_S,
        chunk_bytes: int = blobs.DEFAULT_CHUNK_BYTES,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.engine = engine
        self.session_id = session_id
        self.limits = BatchLimits(max_batch, max_batch_bytes, max_batch_s)
        self.chunk_bytes = chunk_bytes
        self.stats = WriterStats()
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"grad-writer-{session_id}", daemon=True)
        self._thread.start()

    def submit(self, record: StepRecord | CheckpointRecord) -> None:
        """Queue a record, blocking while the queue is full; raises if an earlier write failed."""
        if self._error is not None:
            _release(record)  # refused: give its slot back so capture cannot deadlock
        self._raise_if_failed()
        self._queue.put(record)

    def flush(self) -> None:
        """Wait until everything submitted so far is committed; raises WriterError on failure."""
        if self._thread.is_alive():
            self._queue.put(_FLUSH)  # the open batch commits now instead of waiting for more records
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

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        conn: sa.Connection | None = None
        try:
            while True:
                intake = _Intake(self._queue, self._queue.get(), self.limits)
                try:
                    if self._error is None and intake.has_records:
                        conn = self._write_batch(conn, intake)
                finally:
                    intake.done()  # slots back (also on failure), task_done for every item taken
                if intake.stopped:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _write_batch(self, conn: sa.Connection | None, intake: _Intake) -> sa.Connection | None:
        try:
            conn = conn or self._connect()
            started = time.perf_counter()
            self._write(conn, intake)
            self.stats.write_s += time.perf_counter() - started - intake.waited_s
        except BaseException as exc:  # noqa: BLE001 - surfaced to the training loop, never lost
            log.error("session %s: writing steps %s failed: %s", self.session_id, intake.steps(), exc)
            self._error = exc
        return conn

    def _connect(self) -> sa.Connection:
        """The writer's own connection, out of the pool, its commits asynchronous.

        A database crash may lose the last fraction of a second of commits, but never splits a step
        from its gradients nor reorders them; finish / fail commit synchronously on another
        connection, which flushes everything before them. Detached, the session setting can never
        reach another user of the pool, and no per-transaction SET round trip is needed.
        """
        conn = self.engine.connect()
        conn.detach()
        with conn.begin():
            conn.execute(queries.get("trainer.async_commit"))
        # COPY picks dumpers by type oid, and for bytea that is DB-API's pure-Python Binary wrapper;
        # point it back at the dumper psycopg uses for bytes (C when available): three per chunk row.
        adapters = conn.connection.dbapi_connection.adapters
        adapters.register_dumper(bytes, adapters.get_dumper(bytes, PyFormat.BINARY))
        return conn

    def _write(self, conn: sa.Connection, intake: _Intake) -> None:
        with conn.begin():
            step_rows: list[tuple] = []
            checkpoint = None
            with _LazyCopy(conn, "trainer.copy_gradient_blobs", BLOB_COPY_TYPES) as copy:
                for record in intake:  # takes more records from the queue while this batch is open
                    if isinstance(record, CheckpointRecord):
                        checkpoint = record  # always the last record of its batch
                        break
                    stored = self._copy_gradients(copy, record) if record.gradients is not None else 0
                    step_rows.append(self._step_row(record, stored))
            with _LazyCopy(conn, "trainer.copy_training_steps", STEP_COPY_TYPES) as copy:
                for row in step_rows:
                    copy.open().write_row(row)
            if checkpoint is not None:
                self._insert_checkpoint(conn, checkpoint)
        self.stats.records += len(step_rows) + (checkpoint is not None)
        self.stats.transactions += 1

    def _copy_gradients(self, copy: _LazyCopy, record: StepRecord) -> int:
        """Stream one step's chunks into the COPY, then free its slot; returns the parameter count."""
        sid, step = self.session_id, record.step
        payloads = record.gradients.payloads(self.chunk_bytes)
        checksum, write_row = blobs.checksum, copy.open().write_row  # runs once per chunk: keep it lean
        chunks = size = 0
        for p in payloads:
            count, shape = len(p.views), _int4_array(p.shape)
            for i, view in enumerate(p.views):
                write_row((sid, step, p.param_name, i, count, p.dtype, shape, p.codec, len(view), checksum(view), view))
                size += len(view)
            chunks += count
        record.gradients.release()  # psycopg has copied the rows: the slot may be filled again
        self.stats.chunks += chunks
        self.stats.blob_bytes += size
        metrics.inc("trainsrv_gradient_bytes_written_total", size)
        return len(payloads)

    def _step_row(self, r: StepRecord, gradients_stored: int) -> tuple:
        return (
            self.session_id,
            r.step,
            r.loss_total,
            r.loss_components,
            r.grad_norm,
            r.learning_rate,
            list(r.batch_ids),
            r.batch_profitability,
            r.timings_ms,
            gradients_stored,
        )

    def _insert_checkpoint(self, conn: sa.Connection, r: CheckpointRecord) -> None:
        conn.execute(
            sa.insert(models.Checkpoint).values(
                session_id=self.session_id,
                step=r.step,
                kind=r.kind,
                params_hash=r.params_hash,
                optimizer_hash=r.optimizer_hash,
                content_hash=r.content_hash,
                byte_length=len(r.state),
                state=r.state,
            )
        )
        if r.on_commit is not None:
            r.on_commit(conn)


class _Intake:
    """The queue items one batch takes; iterating yields its records, taking more while the batch
    is open (see the module docstring for when it closes)."""

    def __init__(self, q: queue.Queue, first, limits: BatchLimits):
        self._queue = q
        self._limits = limits
        self.items = [first]  # everything taken, markers included: each needs its task_done
        self.waited_s = 0.0

    @property
    def has_records(self) -> bool:
        return _is_record(self.items[0])

    @property
    def stopped(self) -> bool:
        return self.items[-1] is _STOP

    def __iter__(self):
        deadline = time.monotonic() + self._limits.seconds
        record, count, size = self.items[0], 0, 0
        while _is_record(record):
            yield record
            count += 1
            size += _gradient_bytes(record)
            if (
                isinstance(record, CheckpointRecord)
                or count >= self._limits.records
                or size >= self._limits.gradient_bytes
            ):
                return
            record = self._take(deadline)

    def _take(self, deadline: float):
        started = time.monotonic()
        try:
            item = self._queue.get(timeout=max(0.0, deadline - started))
        except queue.Empty:
            return None
        finally:
            self.waited_s += time.monotonic() - started
        self.items.append(item)
        return item

    def steps(self) -> list[int]:
        return [item.step for item in self.items if isinstance(item, (StepRecord, CheckpointRecord))]

    def done(self) -> None:
        for item in self.items:
            _release(item)
            self._queue.task_done()


class _LazyCopy:
    """A binary COPY (a named query) started on first use: no round trips when nothing is written."""

    def __init__(self, conn: sa.Connection, query: str, types: list[str]):
        self._conn, self._query, self._types = conn, query, types
        self._stack = contextlib.ExitStack()
        self._copy = None

    def __enter__(self) -> _LazyCopy:
        return self

    def open(self) -> psycopg.Copy:
        """The started COPY (started now if this is the first use)."""
        if self._copy is None:
            cursor = self._stack.enter_context(self._conn.connection.dbapi_connection.cursor())
            self._copy = self._stack.enter_context(cursor.copy(queries.sql(self._query)))
            self._copy.set_types(self._types)
        return self._copy

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)  # ends the COPY, or aborts it when an error is propagating


@functools.lru_cache(maxsize=4096)
def _int4_array(values: tuple[int, ...]) -> bytes:
    """``values`` in PostgreSQL's binary int4[] format, dumped by psycopg's own array dumper.

    A binary COPY field carries no type: the server hands these bytes to int4[]'s receive
    function whatever the client called them, so a shape is dumped once, not once per chunk row
    (psycopg's list dumper is pure Python and was the costliest column).
    """
    transformer = Transformer()
    transformer.set_dumper_types([_INT4_ARRAY_OID], Format.BINARY)
    return bytes(transformer.dump_sequence([list(values)], [PyFormat.BINARY])[0])


def _is_record(item) -> bool:
    return item is not None and item is not _STOP and item is not _FLUSH


def _gradient_bytes(record) -> int:
    if not isinstance(record, StepRecord) or record.gradients is None:
        return 0
    return sum(t.nbytes for t in record.gradients.tensors.values())


def _release(item) -> None:
    if isinstance(item, StepRecord) and item.gradients is not None:
        item.gradients.release()
