"""The ``gc`` job kind: ``trainsrv gc`` run by a trainer (enqueued by hand or by the scheduler)."""

from __future__ import annotations

from app.jobs import registry
from app.retention import gc, policy

GC_PARAMS = {"dry_run": registry.Param(bool, default=False)}


@registry.handler("gc", **GC_PARAMS)
def run_gc_job(ctx: registry.JobContext, params: dict) -> dict:
    """Prune what the retention settings say is due; the report is the job's result."""
    settings = ctx.settings
    report = gc.run_gc(
        ctx.engine,
        policy.Policy.from_settings(settings),
        dry_run=params["dry_run"],
        lock_timeout_s=settings.gc_lock_timeout_s,
        heartbeat=ctx.heartbeat,
        should_stop=ctx.should_stop,
    )
    return report.to_dict()
