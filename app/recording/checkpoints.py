"""Checkpoints: model, optimizer and RNG state at a step, hashed, in a weights-only format.

A checkpoint's ``state`` is ``torch.save`` of a dict holding only tensors, numbers, strings,
lists, tuples and dicts::

    {"format": 1, "step": int, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...]}, "extra": {...trainer state...}}

It is read back with ``torch.load(..., weights_only=True)``: stored bytes are never unpickled
into arbitrary objects.

Hashes (SHA-256):

* ``params_hash``    — every trainable parameter in model order: name, dtype, shape, raw bytes.
  Buffers are left out on purpose: a gradient replay runs no forward pass, so buffers that a
  forward pass updates (e.g. batch-norm statistics) cannot be reproduced by it.
* ``optimizer_hash`` — the optimizer's state_dict walked canonically (tensors by raw bytes,
  other values by ``repr``), including the hyper-parameters of each group.
* ``content_hash``   — the stored ``state`` bytes, for integrity checks.

Two checkpoints with equal ``params_hash`` and ``optimizer_hash`` are bit-for-bit equal in what
an exact replay must reproduce.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle  # only for its exception type: nothing here unpickles

import sqlalchemy as sa
import torch

from app.db import models
from app.errors import TrainsrvError

FORMAT = 1


class CheckpointError(TrainsrvError):
    """A checkpoint is missing or its stored bytes do not match its hash."""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A serialized checkpoint ready to be stored."""

    step: int
    params_hash: bytes
    optimizer_hash: bytes
    content_hash: bytes
    state: bytes


@dataclasses.dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint row read back, with its state deserialized."""

    id: int
    session_id: int
    step: int
    kind: str
    params_hash: bytes
    optimizer_hash: bytes
    content_hash: bytes
    state: dict


def params_hash(model: torch.nn.Module) -> bytes:
    h = hashlib.sha256()
    for name, param in model.named_parameters():
        _update_tensor(h, name, param)
    return h.digest()


def optimizer_hash(optimizer: torch.optim.Optimizer) -> bytes:
    h = hashlib.sha256()
    _update_value(h, optimizer.state_dict())
    return h.digest()


def _update_tensor(h, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    h.update(f"{name}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _update_value(h, value) -> None:
    if isinstance(value, torch.Tensor):
        _update_tensor(h, "T", value)
    elif isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value, key=repr):
            h.update(repr(key).encode() + b":")
            _update_value(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            _update_value(h, item)
        h.update(b"]")
    else:
        h.update(repr(value).encode() + b";")


def rng_state() -> dict:
    """The global torch RNG states (CPU and every CUDA device)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def serialize(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")


def deserialize(data: bytes) -> dict:
    """Load a stored state with ``weights_only=True`` (no arbitrary unpickling).

    Bytes that are not a weights-only checkpoint (a pickle naming other globals, a truncated or
    foreign file) raise CheckpointError: refused, and nothing in them is run."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"stored state is not a weights-only checkpoint; refused: {_refusal(exc)}") from None


def _refusal(exc: BaseException) -> str:
    # torch's message suggests retrying with weights_only=False, which is exactly what must not
    # happen here; keep only its reason (e.g. "Unsupported global: GLOBAL posix.system ...").
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        reason = line.partition("WeightsUnpickler error:")[2].strip()
        if reason:
            return reason.split(". ")[0][:200]
    reasons = [line for line in lines if "GLOBAL" in line] or [
        line for line in lines if not line.startswith(_TORCH_ADVICE)
    ]
    return (reasons[0] if reasons else type(exc).__name__)[:200]


def snapshot(
    step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict | None = None
) -> Snapshot:
    """Serialize model, optimizer, RNG and ``extra`` (trainer state: tensors / numbers / strings)."""
    state = {
        "format": FORMAT,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "extra": extra or {},
    }
    data = serialize(state)
    return Snapshot(step, params_hash(model), optimizer_hash(optimizer), hashlib.sha256(data).digest(), data)


def restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: dict, *, rng: bool = True) -> dict:
    """Load a deserialized state into ``model`` / ``optimizer`` (and the RNG); returns ``extra``."""
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if rng:
        set_rng_state(state["rng"])
    return state.get("extra", {})


def load(conn: sa.Connection, session_id: int, step: int | None = None, *, verify: bool = True) -> StoredCheckpoint:
    """The checkpoint of ``session_id`` at ``step`` (default: the latest), hash-verified."""
    table = models.Checkpoint.__table__
    query = sa.select(table).where(table.c.session_id == session_id)
    query = query.where(table.c.step == step) if step is not None else query
    row = conn.execute(query.order_by(table.c.step.desc()).limit(1)).first()
    if row is None:
        where = f" at step {step}" if step is not None else ""
        raise CheckpointError(f"session {session_id} has no checkpoint{where}")
    return _stored(row, verify)


def _stored(row, verify: bool) -> StoredCheckpoint:
    data = bytes(row.state)
    if verify and hashlib.sha256(data).digest() != bytes(row.content_hash):
        raise CheckpointError(
            f"checkpoint {row.id} (session {row.session_id}, step {row.step}): "
            "content hash mismatch, the stored state is corrupted"
        )
    return StoredCheckpoint(
        row.id,
        row.session_id,
        row.step,
        row.kind,
        bytes(row.params_hash),
        bytes(row.optimizer_hash),
        bytes(row.content_hash),
        deserialize(data),
    )


def list_steps(conn: sa.Connection, session_id: int) -> list[int]:
    """Steps at which ``session_id`` has a checkpoint, ascending."""
    query = (
        sa.select(models.Checkpoint.step)
        .where(models.Checkpoint.session_id == session_id)
        .order_by(models.Checkpoint.step)
    )
    return list(conn.execute(query).scalars())
