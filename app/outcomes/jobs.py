"""Job kind ``validate_outcomes``: the trainer's periodic (or on-demand) outcome labelling."""

from __future__ import annotations

from app.jobs import registry
from app.outcomes.validate import validate_outcomes


@registry.handler(
    "validate_outcomes",
    symbol=registry.Param(str, default=None),
    recheck=registry.Param(bool, default=False),
    force=registry.Param(bool, default=False),
)
def validate_job(ctx: registry.JobContext, params: dict) -> dict:
    """Label due predictions; skipped while ``enable_background_validation`` is off unless ``force``."""
    if not ctx.settings.enable_background_validation and not params["force"]:
        return {
            "skipped": "background validation is disabled (TRAINSRV_ENABLE_BACKGROUND_VALIDATION); "
            "enqueue with force=true to run it anyway"
        }
    result = validate_outcomes(
        ctx.engine, ctx.settings, symbol=params["symbol"], recheck=params["recheck"], should_stop=ctx.should_stop
    )
    return result.as_dict()
