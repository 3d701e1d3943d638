"""What every long-running trainer shares: how a caller steers it, option checks, the device."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

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


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU) or an explicit device; bad names are ValidationErrors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValidationError("device", f"{name!r} requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:  # torch's own message lists every device type it knows; one line is enough
        raise ValidationError("device", f"unknown device {name!r} (e.g. auto, cpu, cuda, cuda:1)") from None
