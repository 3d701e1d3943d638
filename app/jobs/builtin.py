"""Job kinds that belong to the queue itself.

``noop`` does nothing (optionally for ``sleep_s`` seconds): ops use it to check that a trainer
is alive and picking up work (``trainsrv jobs enqueue noop``), and the queue benchmark uses it
to measure the queue's own cost per job.
"""

from __future__ import annotations

import time

from app.jobs import registry

# How often a sleeping noop looks at should_stop(); short so shutdown stays prompt.
STOP_CHECK_S = 0.05


@registry.handler("noop", sleep_s=registry.Param(float, default=0.0, min=0.0, max=86400.0))
def noop(ctx: registry.JobContext, params: dict) -> dict:
    """Sleep ``sleep_s`` seconds (interruptible by shutdown), then succeed."""
    deadline = time.monotonic() + params["sleep_s"]
    while time.monotonic() < deadline:
        if ctx.should_stop():
            raise registry.Interrupted()
        time.sleep(min(STOP_CHECK_S, max(0.0, deadline - time.monotonic())))
    return {"slept_s": params["sleep_s"]}
