"""``trainsrv gc``: prune what the retention plan says is due, one session per transaction.

For each session ``policy.plan`` marks due, in its own short transaction:

1. take the replay lock (29780) and the trainer's session lock (29779) exclusively, without waiting:
   a replay reading the session, or a trainer writing it, makes gc skip it (it is tried again next run);
2. re-read ``v_sessions_protected`` for it under those locks: a session marked keep, started from, or
   replayed since the plan was made is skipped;
3. drop its gradient partition (DETACH + DROP TABLE: no row-by-row delete), delete its checkpoints for
   ``all``, and record ``pruned`` / ``pruned_at`` / ``pruned_reason`` with ``replay_exact = false``.

``lock_timeout`` bounds how long the DDL waits behind other transactions on gradient_blobs; a session
whose locks are not granted in time is skipped, not waited for. ``dry_run`` only plans.
"""

from __future__ import annotations

import dataclasses
import logging

import psycopg
import sqlalchemy as sa

from app.db import queries
from app.recording import sessions
from app.retention import policy as policy_mod

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Pruned:
    """One session gc acted on (or would, with ``dry_run``), or skipped (``skipped`` says why)."""

    session_id: int
    action: str
    reason: str
    freed_bytes: int = 0
    skipped: str | None = None


@dataclasses.dataclass
class GcReport:
    """What one gc run did, and the budget's headroom after it."""

    dry_run: bool
    pruned: list[Pruned]
    gradient_bytes_before: int
    gradient_bytes_after: int
    budget_bytes: int
    by_class: dict[str, dict]

    @property
    def headroom_bytes(self) -> int | None:
        return None if self.budget_bytes <= 0 else self.budget_bytes - self.gradient_bytes_after

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["headroom_bytes"] = self.headroom_bytes
        return data


def run_gc(
    engine: sa.Engine,
    policy: policy_mod.Policy,
    *,
    dry_run: bool = False,
    lock_timeout_s: float = 2.0,
    heartbeat=lambda: None,
    should_stop=lambda: False,
) -> GcReport:
    """Plan, then (unless ``dry_run``) prune every due session; see the module docstring. ``should_stop``
    ends the run between sessions (what is left is due again on the next run)."""
    with engine.connect() as conn:
        plan = policy_mod.plan(conn, policy)
    done = []
    for d in plan.actions:
        if should_stop():
            break
        freed = d.gradient_bytes + (d.checkpoint_bytes if d.action == "all" else 0)
        item = Pruned(d.session_id, d.action, d.reason, freed)
        if not dry_run:
            _prune(engine, item, lock_timeout_s)
            heartbeat()
        done.append(item)
    after = plan if dry_run else _replan(engine, policy)  # a dry run's classes are today's
    log.info(
        "gc%s: %s session(s) pruned, %s skipped",
        " (dry run)" if dry_run else "",
        sum(p.skipped is None for p in done),
        sum(p.skipped is not None for p in done),
    )
    return GcReport(
        dry_run,
        done,
        plan.gradient_bytes,
        plan.gradient_bytes_after if dry_run else after.gradient_bytes,
        policy.budget_bytes,
        after.by_class(),
    )


def _replan(engine: sa.Engine, policy: policy_mod.Policy) -> policy_mod.Plan:
    with engine.connect() as conn:
        return policy_mod.plan(conn, policy)


def _prune(engine: sa.Engine, item: Pruned, lock_timeout_s: float) -> None:
    params = {"session_id": item.session_id}
    try:
        with engine.begin() as conn:
            conn.execute(queries.get("retention.set_lock_timeout"), {"ms": f"{int(lock_timeout_s * 1000)}ms"})
            item.skipped = _blocker(conn, params)
            if item.skipped is None:
                item.freed_bytes = _remove(conn, item, params)
    except sa.exc.OperationalError as exc:
        if not isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            raise
        item.skipped = f"busy: no lock within {lock_timeout_s:g} s"
    except sa.exc.IntegrityError as exc:
        if not isinstance(exc.orig, psycopg.errors.ForeignKeyViolation):
            raise
        # e.g. a checkpoint another session started from (RESTRICT): the session keeps everything for now
        item.skipped = f"still referenced: {str(exc.orig).splitlines()[0]}"
    if item.skipped is not None:
        item.freed_bytes = 0
        log.info("gc skips session %s: %s", item.session_id, item.skipped)


def _blocker(conn: sa.Connection, params: dict) -> str | None:
    """Why the session cannot be pruned now (None: it can, and its locks are held to commit)."""
    if not conn.execute(queries.get("retention.lock_for_pruning"), params).scalar_one():
        return "a replay or a trainer is using it"
    if conn.execute(queries.get("retention.lock_session_row"), params).first() is None:
        return "no such session"
    reasons = conn.execute(queries.get("retention.protection"), params).scalar()
    return None if reasons is None else f"protected: {reasons}"


def _remove(conn: sa.Connection, item: Pruned, params: dict) -> int:
    freed = conn.execute(queries.get("retention.drop_gradients"), params).scalar_one()
    if item.action == "all":
        freed += conn.execute(queries.get("retention.delete_checkpoints"), params).scalar_one()
    sessions.mark_pruned(conn, item.session_id, pruned=item.action, reason=item.reason)
    log.info("gc pruned session %s (%s): %s bytes, %s", item.session_id, item.action, freed, item.reason)
    return int(freed)
