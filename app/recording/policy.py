"""Capture policies (which steps' gradients a session stores, and how) and the bounds of the capture /
write pipeline: configuration only, no torch."""

from __future__ import annotations

import dataclasses

from app.errors import ValidationError

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
    def from_config(cls, raw: dict) -> CapturePolicy:
        return cls(raw.get("name", "full"), int(raw.get("k", 1)), raw.get("half_codec", "bf16"))


@dataclasses.dataclass
class WriterOptions:
    """Bounds of the capture / write pipeline (host memory = slots x gradient bytes)."""

    slots: int = 4
    max_pending: int = 8
    max_batch: int = 16


# The one set of defaults: the writer's and the capture's own defaults read it.
DEFAULT_PIPELINE = WriterOptions()
