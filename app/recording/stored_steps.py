"""Read a session's recorded steps back with their decoded gradients, in step order.

``read_steps`` streams ``training_steps`` rows and their ``gradient_blobs`` from a background
thread, a window of steps per query, decoding (and checksum-verifying) the gradients while the
caller applies the previous ones: replay overlaps database reads with optimizer steps. Memory is
bounded: a window holds at most ``window_bytes`` of blobs (at least one step) and at most
``prefetch`` windows wait in the queue.

A blob that fails to decode — checksum mismatch, missing or duplicated chunk, bytes that do not
hold its shape — raises ``CorruptedBlob`` naming the session, step, parameter and chunk.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator

import sqlalchemy as sa
import torch

from app.db import models, queries
from app.errors import TrainsrvError
from app.recording import blobs

DEFAULT_WINDOW_BYTES = 64 << 20
MAX_WINDOW_STEPS = 64
_DONE = object()


class CorruptedBlob(TrainsrvError):
    """A stored gradient cannot be used: the message names session, step, parameter and chunk."""

    def __init__(self, session_id: int, step: int, error: blobs.BlobError):
        super().__init__(
            f"corrupted gradient blob in session {session_id}, step {step}: {error} "
            f"(see `trainsrv verify --session {session_id}`)"
        )
        self.session_id = session_id
        self.step = step


@dataclasses.dataclass
class StoredStep:
    """One ``training_steps`` row and its decoded gradients (empty when none were captured)."""

    step: int
    loss_total: float
    loss_components: dict
    grad_norm: float | None
    learning_rate: float
    batch_ids: list[int]
    batch_profitability: dict
    gradients_stored: int
    gradients: dict[str, torch.Tensor]


def read_steps(
    engine: sa.Engine,
    session_id: int,
    first: int,
    last: int,
    *,
    prefetch: int = 2,
    window_bytes: int = DEFAULT_WINDOW_BYTES,
) -> Iterator[StoredStep]:
    """Steps ``first..last`` (those that exist) of ``session_id``, ascending, gradients decoded."""
    with engine.connect() as conn:
        window = _window_steps(conn, session_id, first, window_bytes)
    reader = _Prefetcher(engine, session_id, first, last, window, prefetch)
    try:
        yield from reader
    finally:
        reader.stop()


def _window_steps(conn: sa.Connection, session_id: int, first: int, window_bytes: int) -> int:
    """How many steps fit in ``window_bytes``, judged by the first captured step at or after ``first``."""
    blob = models.GradientBlob.__table__
    step = conn.execute(
        sa.select(sa.func.min(blob.c.step)).where(blob.c.session_id == session_id, blob.c.step >= first)
    ).scalar()
    if step is None:
        return MAX_WINDOW_STEPS
    size = (
        conn.execute(
            sa.select(sa.func.sum(blob.c.byte_length)).where(blob.c.session_id == session_id, blob.c.step == step)
        ).scalar()
        or 1
    )
    return max(1, min(MAX_WINDOW_STEPS, window_bytes // size))


class _Prefetcher:
    """Reads windows of steps on a thread; iteration yields them, re-raising the reader's error."""

    def __init__(self, engine: sa.Engine, session_id: int, first: int, last: int, window: int, prefetch: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stopping = threading.Event()
        self._args = (engine, session_id, first, last, window)
        self._thread = threading.Thread(target=self._run, name=f"replay-reader-{session_id}", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[StoredStep]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item

    def stop(self) -> None:
        """Stop the reader early (the consumer broke off) and wait for it."""
        self._stopping.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # unblock a reader waiting on a full queue
            except queue.Empty:
                pass

    def _put(self, item) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        engine, session_id, first, last, window = self._args
        try:
            with engine.connect() as conn:
                for lo in range(first, last + 1, window):
                    hi = min(last, lo + window - 1)
                    if not self._put(_read_window(conn, session_id, lo, hi)):
                        return
                    conn.rollback()  # end the read transaction between windows
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, never lost
            self._put(exc)
            return
        self._put(_DONE)


def _read_window(conn: sa.Connection, session_id: int, lo: int, hi: int) -> list[StoredStep]:
    steps = models.TrainingStep.__table__
    rows = conn.execute(
        sa.select(steps).where(steps.c.session_id == session_id, steps.c.step.between(lo, hi)).order_by(steps.c.step)
    ).all()
    chunks = _chunks_by_step(conn, session_id, lo, hi)
    return [
        StoredStep(
            r.step,
            r.loss_total,
            r.loss_components,
            r.grad_norm,
            r.learning_rate,
            list(r.batch_ids),
            r.batch_profitability,
            r.gradients_stored,
            _decode_step(session_id, r.step, chunks.get(r.step, {})),
        )
        for r in rows
    ]


def _chunks_by_step(conn: sa.Connection, session_id: int, lo: int, hi: int) -> dict[int, dict[str, list]]:
    found: dict[int, dict[str, list]] = {}
    params = {"session_id": session_id, "first": lo, "last": hi}
    for step, name, index, count, dtype, shape, codec, checksum, data in _binary_rows(
        conn, "replay_session.step_blobs", params
    ):
        chunk = blobs.Chunk(name, index, count, dtype, tuple(shape), codec, bytes(checksum), bytes(data))
        found.setdefault(step, {}).setdefault(name, []).append(chunk)
    return found


def _binary_rows(conn: sa.Connection, name: str, params: dict) -> list[tuple]:
    """Rows of a named query fetched in PostgreSQL's binary format: bytea arrives as raw bytes,
    not hex text to be parsed (several times faster for gradient blobs)."""
    statement = str(queries.get(name).compile(dialect=conn.dialect))
    with conn.connection.driver_connection.cursor(binary=True) as cursor:
        return cursor.execute(statement, params).fetchall()


def _decode_step(session_id: int, step: int, params: dict[str, list]) -> dict[str, torch.Tensor]:
    try:
        return {name: blobs.decode(chunks) for name, chunks in params.items()}
    except blobs.BlobError as exc:
        raise CorruptedBlob(session_id, step, exc) from exc
