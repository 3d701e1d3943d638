"""Automatic work, decided from the settings on every scheduler tick of ``trainsrv serve``.

* Periodic: with ``enable_background_validation``, one ``validate_outcomes``, one
  ``detect_events`` and one ``build_experiences`` job (all symbols, in that order of claim) per
  ``validation_interval_s`` window.
* Training, per symbol: ``train_cnn`` once ``min_episodes_for_cnn_training`` **new** replay
  episodes exist — ``v_cnn_replay`` rows (with ``cnn_replay_mode = profitable``: those with
  ``profit_r > min_profit_r_for_replay``; the default ``all``: every one) validated
  since the symbol's last CNN session or ``train_cnn`` job began — and ``train_rl`` once
  ``min_experiences_for_rl_training`` experiences were stored since its last RL session or
  ``train_rl`` job began. A job of that kind queued or running for the symbol holds the next one
  back. Counting from the last session means a threshold changed (and changed back) never
  trains again on data a session already had.
* Retention: one ``gc`` job per ``gc_interval_s`` window (app/retention).

Each decision becomes a dedupe key enqueued with ``queue.enqueue_once`` (a key ever enqueued is
never enqueued again): ``auto:<kind>:<window>`` for periodic jobs, and for training
``auto:<kind>:<symbol>:s<last session id>:j<last job id>`` — the point its count starts from — so
ticks from any number of trainers add each job exactly once. Training jobs get the symbol, the
replay threshold (CNN) and the per-kind settings ``auto_<cnn|rl>_model``, ``..._model_config`` and
``..._params``. Kinds without a registered handler, or whose parameters do not validate, are
skipped (logged once). A threshold or interval <= 0 turns its rule off.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import sqlalchemy as sa

from app.config import Settings
from app.db import queries
from app.errors import ConfigError, ValidationError
from app.jobs import queue, registry, transitions

log = logging.getLogger(__name__)

PERIODIC_KINDS = ("validate_outcomes", "detect_events", "build_experiences")
# Light periodic work is claimed before queued training (a lane that is free takes it first).
PERIODIC_PRIORITY = 10


@dataclasses.dataclass(frozen=True)
class Due:
    """A job the scheduler wants to exist, identified by its dedupe key."""

    kind: str
    dedupe_key: str
    reason: str
    offered: dict = dataclasses.field(default_factory=dict)
    priority: int = 0


@dataclasses.dataclass(frozen=True)
class Threshold:
    """Enqueue ``kind`` for a symbol once ``query`` counts ``minimum`` new items since its last session."""

    kind: str
    model_kind: str
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
            Threshold(
                "train_cnn",
                "cnn",
                "new replay episodes",
                s.min_episodes_for_cnn_training,
                "jobs.new_replay_episodes_by_symbol",
                {"min_profit_r": _replay_threshold(s)},
            ),
            Threshold(
                "train_rl",
                "rl",
                "new experiences",
                s.min_experiences_for_rl_training,
                "jobs.new_experiences_by_symbol",
                {},
            ),
        ]

    def auto_params(self, model_kind: str) -> dict:
        """The parameters auto jobs of ``model_kind`` get from the settings (besides the symbol)."""
        s = self.settings
        params = _json_setting(f"auto_{model_kind}_params", getattr(s, f"auto_{model_kind}_params"))
        if model_kind == "cnn":
            params.setdefault("min_profit_r", _replay_threshold(s))
            params.setdefault("min_profitability", 0.0)
        model = getattr(s, f"auto_{model_kind}_model")
        if model:
            params["model"] = model
        config = getattr(s, f"auto_{model_kind}_model_config")
        if config:
            params["model_config"] = json.dumps(_json_setting(f"auto_{model_kind}_model_config", config))
        return params

    def _periodic(self, conn: sa.Connection) -> list[Due]:
        s = self.settings
        if not s.enable_background_validation or s.validation_interval_s <= 0:
            return []
        # The database clock, so trainers on different machines agree on the window.
        now = conn.execute(sa.text("SELECT extract(epoch FROM now())")).scalar()
        window = math.floor(float(now) / s.validation_interval_s)
        return [
            Due(kind, f"auto:{kind}:{window}", f"every {s.validation_interval_s:g} s", priority=PERIODIC_PRIORITY)
            for kind in PERIODIC_KINDS
        ]

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
            if "symbol" not in handlers[rule.kind].params:
                self._skip_once(rule.kind, "its handler takes no symbol parameter")
                continue
            try:
                offered = self.auto_params(rule.model_kind)
            except ValidationError as exc:
                self._skip_once(rule.kind, str(exc))
                continue
            for row in conn.execute(queries.get(rule.query), rule.query_params).mappings():
                if row["active"] or row["new_count"] < rule.minimum:
                    continue
                key = f"auto:{rule.kind}:{row['symbol']}:s{row['session_id']}:j{row['job_id']}"
                reason = f"{row['new_count']} {rule.what} for {row['symbol']} (threshold {rule.minimum})"
                found.append(Due(rule.kind, key, reason, {**offered, "symbol": row["symbol"]}))
        return found

    def _enqueue(self, conn: sa.Connection, handler: registry.Handler, due: Due) -> int | None:
        try:
            job_id = queue.enqueue_once(
                conn, due.kind, due.offered, due.dedupe_key, priority=due.priority, settings=self.settings
            )
        except ValidationError as exc:
            self._skip_once(due.kind, f"its parameters from the settings do not validate ({exc})")
            return None
        if job_id is not None:
            transitions.emit(
                "job.enqueued",
                job_id=job_id,
                kind=due.kind,
                dedupe_key=due.dedupe_key,
                reason=due.reason,
                source="scheduler",
            )
        return job_id

    def _skip_once(self, kind: str, why: str) -> None:
        if kind not in self._skipped:
            self._skipped.add(kind)
            log.info("scheduler skips %s: %s", kind, why)


def _json_setting(name: str, text: str) -> dict:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(name, f"is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValidationError(name, "must be a JSON object")
    return value


def _replay_threshold(s: Settings) -> float | None:
    """The profit_r threshold of auto CNN sessions (None: every episode), from ``cnn_replay_mode``."""
    if s.cnn_replay_mode not in ("all", "profitable"):
        raise ConfigError(f"TRAINSRV_CNN_REPLAY_MODE={s.cnn_replay_mode!r}: must be all or profitable")
    return s.min_profit_r_for_replay if s.cnn_replay_mode == "profitable" else None
