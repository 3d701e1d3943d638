"""Convergence tracking: best loss and plateau detection on a smoothed training loss.

The step loss is noisy (one mini-batch), so the tracker follows an exponential moving average
(``smoothing``, default 0.9). ``best_loss`` is the lowest smoothed loss seen, so it is never above
the final smoothed loss. Plateaus are measured against ``plateau_ref``, the smoothed loss of the
last step that improved on the previous reference by more than ``min_delta`` (relative): a step that
does not adds one to ``plateau_steps``, an improvement resets it. The session is ``converged`` once
``plateau_steps >= patience``.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass
class ConvergenceTracker:
    patience: int = 50
    min_delta: float = 0.01
    smoothing: float = 0.9
    smoothed: float | None = None
    best_loss: float | None = None
    plateau_steps: int = 0
    first_loss: float | None = None
    plateau_ref: float | None = None  # None in states saved before it existed: best_loss was the reference

    def update(self, loss: float) -> None:
        if not math.isfinite(loss):
            self.plateau_steps += 1
            return
        self.smoothed = loss if self.smoothed is None else self.smoothing * self.smoothed + (1 - self.smoothing) * loss
        if self.first_loss is None:
            self.first_loss = self.smoothed
        if self.plateau_ref is None:
            self.plateau_ref = self.best_loss
        if self.best_loss is None or self.smoothed < self.best_loss:
            self.best_loss = self.smoothed
        if self.plateau_ref is None or self.smoothed < self.plateau_ref * (1 - self.min_delta):
            self.plateau_ref = self.smoothed
            self.plateau_steps = 0
        else:
            self.plateau_steps += 1

    @property
    def converged(self) -> bool:
        return self.plateau_steps >= self.patience

    def state(self) -> dict:
        """Plain numbers, stored in checkpoints so a resumed session continues the same tracking."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> ConvergenceTracker:
        return cls(**state)
