"""What every long-running trainer shares: how a caller steers it, and option checks."""

from __future__ import annotations

import dataclasses
from typing import Callable

from app.errors import ValidationError


@dataclasses.dataclass
class Hooks:
    """How a caller (CLI, job) steers a run: stop requests and liveness heartbeats."""

    should_stop: Callable[[], bool] = lambda: False
    heartbeat: Callable[[], None] = lambda: None


def check(field: str, ok: bool, problem: str) -> None:
    """Raise ValidationError(field, problem) unless ``ok``."""
    if not ok:
        raise ValidationError(field, problem)
