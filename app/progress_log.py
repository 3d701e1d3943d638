"""Training progress in the log: one line every ``TRAINSRV_LOG_EVERY_STEPS`` recorded steps (0: never), so a
running session shows its loss, speed and gradient norm between "started" and "finished"; every recorded
step also counts in the process's metrics (app/metrics.py)."""

from __future__ import annotations

import logging
import time

from app import metrics
from app.config import get_settings

log = logging.getLogger("app.training")
_last: dict[int, tuple[float, int]] = {}  # session id -> (monotonic time, step) of its last progress line


def step(session_id: int, record) -> None:
    """Count one recorded step (``record``: a StepRecord) and log progress when it is due."""
    metrics.training_step()
    every = get_settings().log_every_steps
    if every <= 0:
        return
    now = time.monotonic()
    since, since_step = _last.setdefault(session_id, (now, record.step - 1))
    if record.step % every != 0:
        return
    rate = (record.step - since_step) / (now - since) if now > since else 0.0
    _last[session_id] = (now, record.step)
    grad = "-" if record.grad_norm is None else f"{record.grad_norm:.4g}"
    log.info(
        "session %d step %d: loss %.4g, grad norm %s, lr %.3g, %.2f steps/s",
        session_id,
        record.step,
        record.loss_total,
        grad,
        record.learning_rate,
        rate,
    )
