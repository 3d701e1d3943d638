"""What a session replay is asked to do: the options of an exact replay and of a replay onto another
starting point, and how a starting point is named (plain values, no torch)."""

from __future__ import annotations

import dataclasses
import re

from app.errors import ValidationError
from app.recording.policy import CapturePolicy

OPTIMIZER_STATES = ("checkpoint", "fresh")
_TARGET = re.compile(r"^(?:(?P<session>\d+)(?:@(?P<step>\d+))?|(?:checkpoint|ckpt):(?P<id>\d+))$")


@dataclasses.dataclass(frozen=True)
class ReplayOptions:
    """What to replay: ``from_step`` picks the start checkpoint (the nearest at or before it)."""

    from_step: int | None = None
    to_step: int | None = None
    verify: bool = False
    approximate: bool = False
    device: str = "cpu"
    threads: int | None = None


@dataclasses.dataclass(frozen=True)
class OntoOptions:
    """Which source steps to apply, and how the new session is recorded."""

    from_step: int = 0
    to_step: int | None = None
    approximate: bool = False
    capture: str = "full"
    checkpoint_every: int | None = None
    optimizer_state: str = "checkpoint"
    device: str = "cpu"

    def validate(self) -> None:
        from app.recording.hooks import resolve_device

        if self.from_step < 0:
            raise ValidationError("from_step", f"must be >= 0, got {self.from_step}")
        if self.optimizer_state not in OPTIMIZER_STATES:
            raise ValidationError(
                "optimizer_state", f"must be one of {', '.join(OPTIMIZER_STATES)}, got {self.optimizer_state!r}"
            )
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValidationError("checkpoint_every", f"must be >= 1, got {self.checkpoint_every}")
        CapturePolicy(self.capture)
        resolve_device(self.device)


@dataclasses.dataclass(frozen=True)
class Target:
    """A starting point: a checkpoint row id, or a session and (default: its latest) step."""

    session_id: int | None = None
    step: int | None = None
    checkpoint_id: int | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        m = _TARGET.match(text.strip())
        if m is None:
            raise ValidationError("onto", f"must be SESSION, SESSION@STEP or checkpoint:ID, got {text!r}")
        if m["id"] is not None:
            return cls(checkpoint_id=int(m["id"]))
        return cls(session_id=int(m["session"]), step=None if m["step"] is None else int(m["step"]))
