"""Job kind ``build_experiences``: turn validated RL predictions into replayable transitions."""

from __future__ import annotations

from app.db import models
from app.experiences.build import build_experiences
from app.jobs import registry


@registry.handler(
    "build_experiences",
    symbol=registry.Param(str, default=None),
    model_kind=registry.Param(str, default="rl", choices=models.MODEL_KINDS),
)
def build_job(ctx: registry.JobContext, params: dict) -> dict:
    """Build / refresh RL experiences for one symbol (or all) from validated predictions."""
    return build_experiences(ctx.engine, ctx.settings, symbol=params["symbol"], model_kind=params["model_kind"])
