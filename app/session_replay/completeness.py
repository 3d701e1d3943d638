"""What a recorded session should hold: its steps and the checkpoints it wrote.

A succeeded session's metrics record how many steps it ran (``metrics.steps``); it wrote a start
checkpoint (step 0), one every ``checkpoint_every`` steps and a final one. Verify checks that all of
it is stored, and ``replay --verify`` that it reproduced all of it; neither may call a session whole
when its tail (or its start) was deleted.
"""

from __future__ import annotations

from typing import Any


def recorded_steps(status: str, metrics: Any) -> int | None:
    """The steps a succeeded session ran, by its own metrics (None: unknown, or not succeeded)."""
    steps = (metrics or {}).get("steps") if isinstance(metrics, dict) else None
    if status != "succeeded" or isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        return None
    return steps


def expected_checkpoints(config: Any, last_step: int) -> list[int]:
    """The checkpoints a session that ran ``last_step`` steps wrote: start, periodic and final."""
    every = (config or {}).get("checkpoint_every") if isinstance(config, dict) else None
    periodic = range(every, last_step, every) if isinstance(every, int) and every >= 1 else range(0)
    return sorted({0, *periodic, last_step})


def gaps(
    status: str, metrics: Any, config: Any, steps_stored: int, last_step: int | None, checkpoint_steps: list[int]
) -> list[tuple[str, int, str]]:
    """(kind, step, detail) for each part of a succeeded session that is not stored (empty: complete)."""
    total = recorded_steps(status, metrics)
    if total is None:
        return []
    found: list[tuple[str, int, str]] = []
    last = last_step or 0
    if last < total:
        found.append(
            ("missing_step", last + 1, f"steps {last + 1}..{total} are missing: the session recorded {total} steps")
        )
    elif last > total:
        found.append(
            ("extra_steps", total + 1, f"step rows up to step {last}, but the session recorded steps 1..{total}")
        )
    # Holes below the last stored step are reported by verify's missing_steps check.
    have = set(checkpoint_steps)
    for step in expected_checkpoints(config, total):
        if step not in have:
            found.append(("missing_checkpoint", step, "the session wrote a checkpoint at this step; it is gone"))
    return found
