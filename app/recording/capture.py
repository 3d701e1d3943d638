"""Gradient capture: copy every parameter's gradient off the device, exactly as the optimizer
will consume it, without stalling the training step.

Call ``GradientCapture.capture(step)`` after ``backward()`` and any gradient clipping and
before ``optimizer.step()``. The copy goes into one of a fixed number of host buffer *slots*:

* on CUDA the slots are pinned and the copy is ``non_blocking`` on the current stream, with an
  event recorded after it; the background writer waits on the event, not the training loop;
* on CPU the copy is one batched tensor copy (``torch._foreach_copy_``) into the slot.

A slot keeps its buffers (and the chunk views the writer cuts from them) from step to step while
the gradients keep their names, shapes and dtypes. The writer gives a slot back as soon as the
step's bytes are in its COPY stream, before the transaction commits.

Memory is bounded by the number of slots. When every slot is still waiting to be written,
``capture`` blocks until the writer releases one: a slow database slows training down
(back-pressure) instead of dropping gradients.
"""

from __future__ import annotations

import dataclasses
import queue

import torch

from app.recording import blobs
from app.recording.policy import DEFAULT_PIPELINE, CapturePolicy


@dataclasses.dataclass
class CapturedGradients:
    """Host copies of one step's gradients, held in a slot until the writer releases it."""

    step: int
    codec: str
    tensors: dict[str, torch.Tensor]
    dtypes: dict[str, torch.dtype]
    event: object | None
    _release: object
    _views: dict = dataclasses.field(default_factory=dict)  # the slot's chunk views, reused across steps

    def wait(self) -> None:
        """Block until the asynchronous device-to-host copy has finished (no-op on CPU)."""
        if self.event is not None:
            self.event.synchronize()

    def payloads(self, chunk_bytes: int = blobs.DEFAULT_CHUNK_BYTES) -> list[blobs.Payload]:
        """Every captured gradient as chunk views of the slot's memory (waits for the copy first).

        No bytes are copied: the views are valid only until ``release``.
        """
        self.wait()
        return [self._payload(name, tensor, chunk_bytes) for name, tensor in self.tensors.items()]

    def _payload(self, name: str, tensor: torch.Tensor, chunk_bytes: int) -> blobs.Payload:
        # A slot keeps its buffers from step to step, so their views are cut once, not per step.
        key = (name, self.dtypes[name], chunk_bytes)
        payload = self._views.get(key)
        if payload is None:
            payload = blobs.split(name, tensor, self.codec, original_dtype=self.dtypes[name], chunk_bytes=chunk_bytes)
            self._views[key] = payload
        return payload

    def encode(self, chunk_bytes: int = blobs.DEFAULT_CHUNK_BYTES) -> list[blobs.Chunk]:
        """Checksummed chunks of every captured gradient (waits for the copy first)."""
        self.wait()
        chunks: list[blobs.Chunk] = []
        for name, tensor in self.tensors.items():
            chunks.extend(
                blobs.encode(name, tensor, self.codec, original_dtype=self.dtypes[name], chunk_bytes=chunk_bytes)
            )
        return chunks

    def release(self) -> None:
        """Give the slot back; the tensors must not be used afterwards."""
        if self._release is not None:
            self._release()
            self._release = None


@dataclasses.dataclass
class _SlotLayout:
    """A slot's buffers for one gradient layout (names, shapes, dtypes, devices), reused while it holds."""

    key: tuple
    names: list[str]
    buffers: list[torch.Tensor]
    dtypes: dict[str, torch.dtype]
    on_cuda: bool
    convert_on_device: bool


def _copy_into(layout: _SlotLayout, grads: list[torch.Tensor]) -> None:
    if layout.on_cuda:
        for buf, grad in zip(layout.buffers, grads):
            if layout.convert_on_device:
                grad = grad.to(buf.dtype)  # half the bytes cross the bus
            buf.copy_(grad, non_blocking=True)  # into pinned memory: the writer waits on the event
    elif grads:
        # One call for every parameter: on CPU, per-tensor copy_ costs more in dispatch than in bytes.
        torch._foreach_copy_(layout.buffers, grads)


class GradientCapture:
    """Copies gradients of ``named_parameters`` into a bounded pool of host slots."""

    def __init__(self, named_parameters, policy: CapturePolicy, slots: int = DEFAULT_PIPELINE.slots):
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.params = [(n, p) for n, p in named_parameters if p.requires_grad]
        self.policy = policy
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()  # C-implemented: cheap put / get per step
        self._slots: list[dict[str, torch.Tensor]] = [{} for _ in range(slots)]
        self._layouts: list[_SlotLayout | None] = [None] * slots
        self._views: list[dict] = [{} for _ in range(slots)]  # see CapturedGradients.payloads
        for i in range(slots):
            self._free.put(i)

    def capture(self, step: int, timeout_s: float | None = None) -> CapturedGradients | None:
        """Start copying this step's gradients; None when the policy skips the step.

        Parameters whose ``grad`` is None (unused in this step) are not captured: the optimizer
        skips them too, and a replay leaves their grad None.
        """
        if not self.policy.captures(step):
            return None
        grads = [(name, p.grad) for name, p in self.params if p.grad is not None]
        slot_id = self._free.get(timeout=timeout_s)  # back-pressure: waits for the writer
        layout = self._layout(slot_id, grads)
        with torch.no_grad():
            _copy_into(layout, [g for _, g in grads])
        event = None
        if layout.on_cuda:
            event = torch.cuda.Event()
            event.record()
        return CapturedGradients(
            step,
            self.policy.codec,
            dict(zip(layout.names, layout.buffers)),
            dict(layout.dtypes),
            event,
            lambda: self._free.put(slot_id),
            self._views[slot_id],
        )

    def _layout(self, slot_id: int, grads: list[tuple[str, torch.Tensor]]) -> _SlotLayout:
        """The slot's buffers for these gradients; rebuilt only when a name, shape, dtype or device changed."""
        key = tuple((name, g.shape, g.dtype, g.is_cuda) for name, g in grads)
        layout = self._layouts[slot_id]
        if layout is None or layout.key != key:
            on_cuda = any(g.is_cuda for _, g in grads)
            convert = on_cuda and self.policy.codec != "raw"
            buffers = [self._buffer(slot_id, name, g) for name, g in grads]
            layout = _SlotLayout(
                key, [name for name, _ in grads], buffers, {name: g.dtype for name, g in grads}, on_cuda, convert
            )
            self._layouts[slot_id] = layout
        return layout

    def _buffer(self, slot_id: int, name: str, grad: torch.Tensor) -> torch.Tensor:
        """The slot's host buffer for ``name``, (re)allocated when the gradient's shape or dtype changed."""
        stored = blobs.codec_dtype(self.policy.codec, grad.dtype)
        slot = self._slots[slot_id]
        buf = slot.get(name)
        if buf is None or buf.shape != grad.shape or buf.dtype != stored:
            buf = torch.empty(grad.shape, dtype=stored, pin_memory=grad.is_cuda)
            slot[name] = buf
            views = self._views[slot_id]
            for key in [k for k in views if k[0] == name]:
                del views[key]  # they point into the buffer just replaced
        return buf
