"""Gradient capture: copy every parameter's gradient off the device, exactly as the optimizer
will consume it, without stalling the training step.

Call ``GradientCapture.capture(step)`` after ``backward()`` and any gradient clipping and
before ``optimizer.step()``. The copy goes into one of a fixed number of host buffer *slots*:

* on CUDA the slots are pinned and the copy is ``non_blocking`` on the current stream, with an
  event recorded after it; the background writer waits on the event, not the training loop;
* on CPU the copy is a plain tensor copy into the slot.

Memory is bounded by the number of slots. When every slot is still waiting to be written,
``capture`` blocks until the writer releases one: a slow database slows training down
(back-pressure) instead of dropping gradients.
"""

from __future__ import annotations

import dataclasses
import queue
import threading

import torch

from app.trainer import blobs

POLICIES = ("full", "every_k", "half", "none")
HALF_CODECS = ("bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class CapturePolicy:
    """Which steps are captured and how.

    * ``full``    — every parameter at every step, raw bytes: lossless, replay-exact (default).
    * ``every_k`` — raw bytes, but only at steps divisible by ``k``: not replay-exact.
    * ``half``    — every step, rounded to ``half_codec`` (bf16 or fp16): not replay-exact.
    * ``none``    — nothing captured (steps and checkpoints are still recorded).
    """

    name: str = "full"
    k: int = 1
    half_codec: str = "bf16"

    def __post_init__(self):
        from app.errors import ValidationError

        if self.name not in POLICIES:
            raise ValidationError("capture", f"must be one of {', '.join(POLICIES)}, got {self.name!r}")
        if self.k < 1:
            raise ValidationError("capture_k", f"must be >= 1, got {self.k}")
        if self.half_codec not in HALF_CODECS:
            raise ValidationError("half_codec", f"must be one of {', '.join(HALF_CODECS)}, got {self.half_codec!r}")

    @property
    def replay_exact(self) -> bool:
        """Only lossless capture of every step lets a replay reproduce checkpoints bit for bit."""
        return self.name == "full"

    @property
    def codec(self) -> str:
        return self.half_codec if self.name == "half" else "raw"

    def captures(self, step: int) -> bool:
        if self.name == "none":
            return False
        return self.name != "every_k" or step % self.k == 0

    def to_config(self) -> dict:
        return {"name": self.name, "k": self.k, "half_codec": self.half_codec}

    @classmethod
    def from_config(cls, raw: dict) -> "CapturePolicy":
        return cls(raw.get("name", "full"), int(raw.get("k", 1)), raw.get("half_codec", "bf16"))


@dataclasses.dataclass
class CapturedGradients:
    """Host copies of one step's gradients, held in a slot until the writer releases it."""

    step: int
    codec: str
    tensors: dict[str, torch.Tensor]
    dtypes: dict[str, torch.dtype]
    event: object | None
    _release: object

    def wait(self) -> None:
        """Block until the asynchronous device-to-host copy has finished (no-op on CPU)."""
        if self.event is not None:
            self.event.synchronize()

    def encode(self, chunk_bytes: int = blobs.DEFAULT_CHUNK_BYTES) -> list[blobs.Chunk]:
        """Checksummed chunks of every captured gradient (waits for the copy first)."""
        self.wait()
        chunks: list[blobs.Chunk] = []
        for name, tensor in self.tensors.items():
            chunks.extend(blobs.encode(name, tensor, self.codec, original_dtype=self.dtypes[name],
                                       chunk_bytes=chunk_bytes))
        return chunks

    def release(self) -> None:
        """Give the slot back; the tensors must not be used afterwards."""
        if self._release is not None:
            self._release()
            self._release = None


class GradientCapture:
    """Copies gradients of ``named_parameters`` into a bounded pool of host slots."""

    def __init__(self, named_parameters, policy: CapturePolicy, slots: int = 4):
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.params = [(n, p) for n, p in named_parameters if p.requires_grad]
        self.policy = policy
        self._free: queue.Queue[int] = queue.Queue()
        self._slots: list[dict[str, torch.Tensor]] = [{} for _ in range(slots)]
        for i in range(slots):
            self._free.put(i)
        self._lock = threading.Lock()

    def capture(self, step: int, timeout_s: float | None = None) -> CapturedGradients | None:
        """Start copying this step's gradients; None when the policy skips the step.

        Parameters whose ``grad`` is None (unused in this step) are not captured: the optimizer
        skips them too, and a replay leaves their grad None.
        """
        if not self.policy.captures(step):
            return None
        slot_id = self._free.get(timeout=timeout_s)  # back-pressure: waits for the writer
        slot = self._slots[slot_id]
        tensors, dtypes, on_cuda = {}, {}, False
        for name, param in self.params:
            grad = param.grad
            if grad is None:
                continue
            tensors[name] = self._copy(slot, name, grad)
            dtypes[name] = grad.dtype
            on_cuda = on_cuda or grad.is_cuda
        event = None
        if on_cuda:
            event = torch.cuda.Event()
            event.record()
        return CapturedGradients(step, self.policy.codec, tensors, dtypes, event,
                                 lambda: self._free.put(slot_id))

    def _copy(self, slot: dict[str, torch.Tensor], name: str, grad: torch.Tensor) -> torch.Tensor:
        stored = blobs.codec_dtype(self.policy.codec, grad.dtype)
        buf = slot.get(name)
        if buf is None or buf.shape != grad.shape or buf.dtype != stored:
            buf = torch.empty(grad.shape, dtype=stored, pin_memory=grad.is_cuda)
            slot[name] = buf
        src = grad.detach()
        if grad.is_cuda and stored != grad.dtype:
            src = src.to(stored)  # convert on the device: half the bytes cross the bus
        buf.copy_(src, non_blocking=grad.is_cuda)
        return buf
