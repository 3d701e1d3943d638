"""Optimizer and learning-rate schedule, rebuilt identically from a session's config.

Training, resume and exact replay all build the optimizer from the same ``OptimizerSpec``
(stored in ``training_sessions.config["optimizer"]``) and set the learning rate of step ``s``
with ``apply_lr(optimizer, s)`` before ``optimizer.step()``. The implementation is pinned
(``foreach=False``, never fused) so the same gradients give the same bits on every run.

Steps are numbered from 1: step ``s`` is the s-th optimizer update; checkpoint step 0 is the
state before any update.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from app.errors import ValidationError

if TYPE_CHECKING:
    import torch

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer hyper-parameters, schedule and gradient clipping of a session."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 10
    total_steps: int = 0
    min_lr_ratio: float = 0.1
    clip_grad_norm: float | None = 1.0

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValidationError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ValidationError("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValidationError("lr", f"must be a positive finite number, got {self.lr!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValidationError("clip_grad_norm", f"must be positive or None, got {self.clip_grad_norm!r}")

    def build(self, params) -> torch.optim.Optimizer:
        import torch

        """A fresh optimizer over ``params`` with this spec (lr is set per step by ``apply_lr``)."""
        if self.name == "sgd":
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, foreach=False
            )
        cls = torch.optim.AdamW if self.name == "adamw" else torch.optim.Adam
        return cls(
            params, lr=self.lr, betas=tuple(self.betas), eps=self.eps, weight_decay=self.weight_decay, foreach=False
        )

    def lr_at(self, step: int) -> float:
        """Learning rate of (1-based) step ``step``: linear warm-up, then constant or cosine decay."""
        if self.warmup_steps and step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        if self.schedule == "constant" or self.total_steps <= self.warmup_steps:
            return self.lr
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply_lr(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def to_config(self) -> dict:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_config(cls, raw: dict) -> OptimizerSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValidationError(f"optimizer.{unknown[0]}", "is not an optimizer setting")
        data = dict(raw)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)
