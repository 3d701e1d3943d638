"""Job kinds for bench_loop.py's lag bench (loaded with TRAINSRV_HANDLER_MODULES=bench.loop_handlers)."""

from __future__ import annotations

import time

from app.jobs import registry


@registry.handler("bench_train", seconds=registry.Param(float, min=0.0))
def bench_train(ctx: registry.JobContext, params: dict) -> dict:
    """Hold the main lane for ``seconds`` like a training job would (interruptible)."""
    deadline = time.monotonic() + params["seconds"]
    while time.monotonic() < deadline:
        if ctx.should_stop():
            raise registry.Interrupted()
        time.sleep(0.1)
    return {"seconds": params["seconds"]}
