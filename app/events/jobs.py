"""Job kind ``detect_events``: rapid price-change detection for the trainer."""

from __future__ import annotations

from app.events.detect import detect_events
from app.jobs import registry


@registry.handler("detect_events", symbol=registry.Param(str, default=None))
def detect_job(ctx: registry.JobContext, params: dict) -> dict:
    """Detect velocity and volatility-spike events (one symbol, or all) and mark packages premium."""
    return detect_events(ctx.engine, ctx.settings, symbol=params["symbol"])
