"""One recorded training step, shared by every trainer (CNN, RL): the order that makes replay exact.

``train_step`` runs, in this order:

1. ``optimizer.zero_grad(set_to_none=True)``
2. ``loss, components = compute_loss()`` — the model's forward pass and loss (trainer-specific)
3. ``loss.backward()``
4. gradient norm, then clipping to ``spec.clip_grad_norm`` (when set)
5. ``recorder.capture(step)`` — the gradients exactly as the optimizer will consume them
6. ``spec.apply_lr(optimizer, step)`` and ``optimizer.step()``
7. the step row is queued to the background writer with its captured gradients

A replay loads the stored gradients into ``param.grad`` and repeats 6 only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import torch

from app.recording.optim import OptimizerSpec
from app.recording.session import SessionRecorder
from app.recording.writer import StepRecord


class NonFiniteLoss(ArithmeticError):
    """The loss became NaN or infinite; the step is not applied."""


@dataclasses.dataclass
class Batch:
    """What a step trains on: ids of its rows and their profitability summary."""

    ids: list[int]
    profitability: dict
    load_ms: float = 0.0


def train_step(
    recorder: SessionRecorder | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    spec: OptimizerSpec,
    step: int,
    batch: Batch,
    compute_loss: Callable[[], tuple[torch.Tensor, dict[str, float]]],
) -> StepRecord:
    """Run and record one optimizer step (``recorder`` None: train without recording)."""
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss, components = compute_loss()
    t1 = time.perf_counter()
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise NonFiniteLoss(f"step {step}: loss is {loss_value} ({components})")
    loss.backward()
    t2 = time.perf_counter()
    grad_norm = _clip(model, spec.clip_grad_norm)
    captured = recorder.capture(step) if recorder is not None else None
    t3 = time.perf_counter()
    lr = spec.apply_lr(optimizer, step)
    optimizer.step()
    t4 = time.perf_counter()
    timings = {
        "load": batch.load_ms,
        "forward": _ms(t0, t1),
        "backward": _ms(t1, t2),
        "capture": _ms(t2, t3),
        "optimizer": _ms(t3, t4),
        "total": batch.load_ms + _ms(t0, t4),
    }
    record = StepRecord(step, loss_value, components, grad_norm, lr, batch.ids, batch.profitability, timings, captured)
    if recorder is not None:
        recorder.record_step(record)
    return record


def _clip(model: torch.nn.Module, max_norm: float | None) -> float:
    """The total gradient norm before clipping (clipping in place when ``max_norm`` is set)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        return float(torch.nn.utils.get_total_norm([p.grad for p in params]))
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def _ms(a: float, b: float) -> float:
    return round((b - a) * 1000.0, 3)
