"""Automatic work, decided from the settings on every scheduler tick of ``trainsrv serve``.

* Periodic: with ``enable_background_validation``, one ``validate_outcomes`` and one
  ``detect_events`` job (all symbols) per ``validation_interval_s`` window.
* Retention: one ``gc`` job per ``gc_interval_s`` window (app/retention).
* Thresholds: ``train_cnn`` once ``min_episodes_for_cnn_training`` replay episodes exist (valid
  packages with a validated outcome of ``profitability_score >= min_profitability_for_replay``),
  ``train_rl`` once ``min_experiences_for_rl_training`` experiences exist — and again each time
  another threshold's worth has accumulated. When the kind takes a ``symbol`` parameter the
  count and the job are per symbol; otherwise over all symbols.

Each decision becomes a dedupe key (``auto:<kind>[:<symbol>]:<window or multiple>``) enqueued
with ``queue.enqueue_once``: a key that was ever enqueued is never enqueued again, so ticks from
any number of trainers add each job exactly once. The scheduler offers a kind the parameters it
knows (``symbol``, ``min_profitability``) and passes those the kind accepts. Kinds without a
registered handler, or needing parameters the scheduler cannot give, are skipped (logged once).
A threshold or interval <= 0 turns its rule off.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import sqlalchemy as sa

from app.config import Settings
from app.db import queries
from app.errors import ValidationError
from app.jobs import queue, registry, transitions

log = logging.getLogger(__name__)

PERIODIC_KINDS = ("validate_outcomes", "detect_events")


@dataclasses.dataclass(frozen=True)
class Due:
    """A job the scheduler wants to exist, identified by its dedupe key."""

    kind: str
    dedupe_key: str
    reason: str
    offered: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """Enqueue ``kind`` each time the count from ``query`` reaches another multiple of ``minimum``."""

    kind: str
    what: str
    minimum: int
    query: str
    query_params: dict


class Scheduler:
    """Computes what is due and enqueues it once; ``tick`` is safe to call from many trainers."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._skipped: set[str] = set()

    def tick(self, conn: sa.Connection) -> list[int]:
        """Enqueue every due job not enqueued before; the new job ids."""
        handlers = registry.load_handlers()
        created = []
        for due in self.due(conn, handlers):
            job_id = self._enqueue(conn, handlers[due.kind], due)
            if job_id is not None:
                created.append(job_id)
        return created

    def due(self, conn: sa.Connection, handlers: dict[str, registry.Handler]) -> list[Due]:
        """Every job the settings call for right now among registered kinds (enqueued ones included)."""
        found = [*self._periodic(conn), *self._gc(conn), *self._thresholds(conn, handlers)]
        for due in found:
            if due.kind not in handlers:
                self._skip_once(due.kind, "no handler registered in this trainer")
        return [due for due in found if due.kind in handlers]

    def thresholds(self) -> list[Threshold]:
        s = self.settings
        return [
            Threshold("train_cnn", "replay episodes", s.min_episodes_for_cnn_training,
                      "jobs.replay_episodes_by_symbol", {"min_profitability": s.min_profitability_for_replay}),
            Threshold("train_rl", "experiences", s.min_experiences_for_rl_training, "jobs.experiences_by_symbol", {}),
        ]

    def _periodic(self, conn: sa.Connection) -> list[Due]:
        s = self.settings
        if not s.enable_background_validation or s.validation_interval_s <= 0:
            return []
        # The database clock, so trainers on different machines agree on the window.
        now = conn.execute(sa.text("SELECT extract(epoch FROM now())")).scalar()
        window = math.floor(float(now) / s.validation_interval_s)
        return [Due(kind, f"auto:{kind}:{window}", f"every {s.validation_interval_s:g} s") for kind in PERIODIC_KINDS]

    def _gc(self, conn: sa.Connection) -> list[Due]:
        """One retention run (``gc``, app/retention) per ``gc_interval_s`` window."""
        interval = self.settings.gc_interval_s
        if interval <= 0:
            return []
        window = math.floor(float(conn.execute(sa.text("SELECT extract(epoch FROM now())")).scalar()) / interval)
        return [Due("gc", f"auto:gc:{window}", f"every {interval:g} s")]

    def _thresholds(self, conn: sa.Connection, handlers: dict[str, registry.Handler]) -> list[Due]:
        found = []
        for rule in self.thresholds():
            if rule.minimum <= 0 or rule.kind not in handlers:
                continue
            counts = dict(conn.execute(queries.get(rule.query), rule.query_params).all())
            offered = {"min_profitability": self.settings.min_profitability_for_replay}
            if "symbol" in handlers[rule.kind].params:
                found += [self._crossing(rule, n, {**offered, "symbol": sym}, sym) for sym, n in counts.items()]
            else:
                found.append(self._crossing(rule, sum(counts.values()), offered, None))
        return [due for due in found if due is not None]

    @staticmethod
    def _crossing(rule: Threshold, count: int, offered: dict, symbol: str | None) -> Due | None:
        multiple = count // rule.minimum
        if multiple < 1:
            return None
        scope = f"{symbol}:" if symbol is not None else ""
        where = f" for {symbol}" if symbol is not None else ""
        return Due(rule.kind, f"auto:{rule.kind}:{scope}{multiple}",
                   f"{multiple * rule.minimum}+ {rule.what}{where} (threshold {rule.minimum})", offered)

    def _enqueue(self, conn: sa.Connection, handler: registry.Handler, due: Due) -> int | None:
        params = {k: v for k, v in due.offered.items() if k in handler.params}
        try:
            job_id = queue.enqueue_once(conn, due.kind, params, due.dedupe_key, settings=self.settings)
        except ValidationError as exc:
            self._skip_once(due.kind, f"it needs parameters the scheduler cannot give ({exc})")
            return None
        if job_id is not None:
            transitions.emit("job.enqueued", job_id=job_id, kind=due.kind, dedupe_key=due.dedupe_key,
                             reason=due.reason, source="scheduler")
        return job_id

    def _skip_once(self, kind: str, why: str) -> None:
        if kind not in self._skipped:
            self._skipped.add(kind)
            log.info("scheduler skips %s: %s", kind, why)
