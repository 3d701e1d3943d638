"""The ``promote_model`` job kind: the promotion gate on one candidate (``app.registry.gate``).

A training job (``train_cnn`` / ``train_rl``) with ``promote`` set (the default) enqueues one when its
session succeeds, so every automatic training ends with a gate decision; the scheduler is not involved.
The dedupe key ``auto:promote_model:<session id>`` makes a retried training job enqueue it once.
"""

from __future__ import annotations

import sqlalchemy as sa

from app.jobs import queue, registry

JOB_KIND = "promote_model"
PRIORITY = 10


@registry.handler(JOB_KIND, session_id=registry.Param(int, min=1), force=registry.Param(bool, default=False))
def run_job(ctx: registry.JobContext, params: dict) -> dict:
    """Run the gate on ``session_id`` and return the decision."""
    from app.registry import gate

    decision = gate.run(
        ctx.engine, params["session_id"], settings=ctx.settings, source=f"job {ctx.job_id}", force=params["force"]
    )
    return {k: v for k, v in decision.to_dict().items() if k != "evidence"} | {
        "checks": {c["check"]: c["passed"] for c in decision.evidence.get("checks", [])}
    }


def after_training(engine: sa.Engine, result: dict, promote: bool, *, inline: bool = False) -> dict:
    """The gate for a succeeded session when ``promote``: run now (``inline``, the CLI: ``result`` gets the
    ``promotion``) or enqueued as a ``promote_model`` job (a training job: ``result`` gets its
    ``promote_job_id``; a failing gate then never makes the training job run again)."""
    if not promote or result.get("status") != "succeeded":
        return result
    if inline:
        from app.registry import gate

        decision = gate.run(engine, result["session_id"], source="train command")
        return {**result, "promotion": {k: v for k, v in decision.to_dict().items() if k != "evidence"}}
    with engine.begin() as conn:
        # Before the next training job: a fresh model should reach the orchestrator as soon as it is judged.
        job = queue.enqueue(
            conn,
            JOB_KIND,
            {"session_id": result["session_id"]},
            priority=PRIORITY,
            dedupe_key=f"auto:{JOB_KIND}:{result['session_id']}",
        )
    return {**result, "promote_job_id": job.id}
