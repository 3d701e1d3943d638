"""The database-backed profit-weighted prioritized experience buffer (the seed's
ProfitWeightedExperienceBuffer).

Experiences live in ``experiences``; which of them may be replayed, and with what weight
(priority^alpha, boosted when profitable), is defined by the ``v_rl_replay`` view. A trigger-kept
index (``rl_replay_slots`` / ``rl_replay_buckets``, holding a copy of the rows' trainer fields) lets
one SQL statement draw a batch exactly in proportion to that weight and return its rows, in time
independent of the table size (bucketed rejection sampling, see
``sql/functions/rl_replay_index/v0002.sql``). Each batch's draws are logged (``rl_replay_draws``) and
folded into ``experiences.times_sampled`` by the batch's priority write-back, which also re-indexes
the new priorities; the views count the pending draws too. Each sample and each write-back is one
statement in its own transaction: one round trip. The server's random numbers are seeded from a
seeded numpy generator, so a session's batches are reproducible given the same database state.

    buffer = ProfitWeightedExperienceBuffer(engine, seed=7)
    batch = buffer.sample(256)                       # half from profitable experiences by default
    buffer.update_priorities(batch.ids, td_errors)   # |td| + epsilon, re-indexed; folds the draws
"""

from __future__ import annotations

import math
import weakref
from typing import NoReturn

import numpy as np
import sqlalchemy as sa

from app.config import Settings, get_settings
from app.db import queries
from app.errors import TrainsrvError, ValidationError
from app.replay import batch as batches


class EmptyReplay(TrainsrvError):
    """There is nothing to replay (no valid experiences)."""


class ProfitWeightedExperienceBuffer:
    """Prioritized replay over ``v_rl_replay`` with a configurable profitable share per batch."""

    def __init__(self, engine: sa.Engine, *, seed: int | None = None, settings: Settings | None = None,
                 profitable_share: float | None = None, beta: batches.BetaSchedule | None = None,
                 priority_epsilon: float | None = None):
        settings = settings or get_settings()
        self.engine = engine
        self.rng = np.random.default_rng(seed)
        self.profitable_share = _share(settings.rl_profitable_share if profitable_share is None
                                       else profitable_share)
        self.beta = beta or batches.BetaSchedule(settings.rl_beta_start, settings.rl_beta_anneal_steps)
        self.priority_epsilon = settings.rl_priority_epsilon if priority_epsilon is None else priority_epsilon
        if not self.priority_epsilon > 0:
            raise ValidationError("priority_epsilon", f"must be > 0, got {self.priority_epsilon}")
        self.synchronous_commit = settings.rl_replay_synchronous_commit
        self.samples_drawn = 0
        self._unfolded: list[int] = []   # rl_replay_draws rows of this buffer's batches not written back yet
        self._link = _Link(engine)
        # Give the connection back to the pool when the buffer goes away, even if close() is never called.
        weakref.finalize(self, self._link.close)

    def close(self) -> None:
        """Return the buffer's connection to the pool (it reconnects if used again)."""
        self._link.close()

    def __enter__(self) -> "ProfitWeightedExperienceBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, batch_size: int, prioritize_profitable: bool = True, *, symbol: str | None = None,
               beta: float | None = None) -> batches.ReplayBatch:
        """Draw ``batch_size`` experiences (with replacement) in proportion to their weight.

        With ``prioritize_profitable`` a ``profitable_share`` of the draws come from the profitable
        experiences only (when there are any), the rest from all. ``symbol`` restricts the draw
        (and the probabilities) to one symbol's experiences. The draws are logged in the same
        statement: ``v_rl_replay`` / ``v_rl_replay_stats`` count them at once, and the next
        ``update_priorities`` folds them into ``experiences.times_sampled`` / ``last_sampled_at``.
        """
        if batch_size < 1:
            raise ValidationError("batch_size", f"must be >= 1, got {batch_size}")
        beta = self.beta.at(self.samples_drawn) if beta is None else beta
        need_profitable = round(self.profitable_share * batch_size) if prioritize_profitable else 0
        params = {"symbol": symbol, "need_all": batch_size - need_profitable, "need_profitable": need_profitable,
                  "seed": self.rng.random() * 2.0 - 1.0,   # setseed() takes [-1, 1]
                  "synchronous_commit": self.synchronous_commit}
        rows = self._link.execute(queries.get("replay.sample"), params).all()
        if rows:
            self._unfolded.append(rows[0].draw_row)
        if len(rows) < batch_size:
            self._short(len(rows), batch_size, symbol)
        self.samples_drawn += 1
        # With nothing profitable in scope the sampler draws the profitable quota from all.
        return batches.from_rows(rows, beta)

    def _short(self, got: int, wanted: int, symbol: str | None) -> NoReturn:
        if got == 0 and self.size(symbol)["total"] == 0:
            scope = f"for symbol {symbol!r}" if symbol else "at all"
            raise EmptyReplay(f"no replayable experiences {scope}: none exist, or none has valid packages")
        raise TrainsrvError(f"replay sampling drew {got} of {wanted} experiences: the sampling index is inconsistent "
                            "(see replay.buffer.index_problems; `SELECT rl_replay_rebuild()` repairs it)")

    # -- priorities ---------------------------------------------------------------------------

    def update_priorities(self, ids, td_errors) -> int:
        """Set each experience's priority to |TD error| + epsilon; returns the rows updated.

        An id given more than once keeps its largest error. The same statement re-indexes the new
        priorities and folds the draws of this buffer's batches into ``experiences``.
        """
        ids = np.asarray(ids, dtype=np.int64).ravel()
        errors = np.abs(np.asarray(td_errors, dtype=np.float64).ravel())
        if ids.shape != errors.shape:
            raise ValidationError("td_errors", f"has {errors.size} values for {ids.size} ids")
        if not np.isfinite(errors).all():
            raise ValidationError("td_errors", "must be finite (got NaN or infinity)")
        if ids.size == 0 and not self._unfolded:
            return 0
        unique, inverse = np.unique(ids, return_inverse=True)
        priorities = np.zeros(unique.size)
        np.maximum.at(priorities, inverse, errors)
        priorities += self.priority_epsilon
        params = {"ids": _array_literal(unique.tolist()), "priorities": _array_literal(priorities.tolist()),
                  "draw_rows": _array_literal(self._unfolded), "synchronous_commit": self.synchronous_commit}
        written = self._link.execute(queries.get("replay.update_priorities"), params).scalar_one()
        self._unfolded = []
        return written

    def max_priority(self) -> float:
        """The priority a new experience enters at (the running maximum)."""
        with self.engine.connect() as conn:
            return float(conn.execute(queries.get("replay.max_priority")).scalar_one())

    # -- configuration and inspection ---------------------------------------------------------

    def config(self) -> dict:
        """alpha, profit_boost and max_priority as stored in ``rl_replay_config``."""
        with self.engine.connect() as conn:
            return dict(conn.execute(queries.get("replay.config")).mappings().one())

    def configure(self, alpha: float | None = None, profit_boost: float | None = None) -> dict:
        """Change alpha (0..1) and / or the profit boost (> 0); the index is rebuilt by trigger."""
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValidationError("alpha", f"must be in [0, 1], got {alpha}")
        if profit_boost is not None and not (profit_boost > 0 and math.isfinite(profit_boost)):
            raise ValidationError("profit_boost", f"must be a finite number > 0, got {profit_boost}")
        with self.engine.begin() as conn:
            conn.execute(queries.get("replay.configure"), {"alpha": alpha, "profit_boost": profit_boost})
        return self.config()

    def size(self, symbol: str | None = None) -> dict:
        """Replayable experiences (of ``symbol``, or all): ``{"profitable": n, "total": n}``."""
        with self.engine.connect() as conn:
            row = conn.execute(queries.get("replay.sizes"), {"symbol": symbol}).one()
        return {"profitable": row.profitable, "total": row.total}

    def stats(self) -> list[dict]:
        """Profitable vs unprofitable tracking from ``v_rl_replay_stats``."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(queries.get("replay.stats")).mappings()]


class _Link:
    """The buffer's own connection for samples and write-backs: each is one statement in its own
    transaction (autocommit; a single statement is atomic anyway), so one round trip, with no pool
    checkout ping, BEGIN or COMMIT around it, and the server keeps its prepared plans."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.conn: sa.Connection | None = None

    def execute(self, query: sa.TextClause, params: dict) -> sa.CursorResult:
        reused = self.conn is not None and not self.conn.invalidated
        try:
            return self._open().execute(query, params)
        except sa.exc.DBAPIError as exc:
            # A connection idle since the last call may have been dropped (server restart): what the
            # pool's checkout ping would have caught. Reconnect once; any other error is the caller's.
            if not (reused and exc.connection_invalidated):
                raise
            self.close()
            return self._open().execute(query, params)

    def _open(self) -> sa.Connection:
        if self.conn is None or self.conn.closed or self.conn.invalidated:
            self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _array_literal(values: list) -> str:
    """A PostgreSQL array literal of numbers, which the query casts: formatting 500 numbers in one string
    costs less than half of adapting them as list parameters (0.2 vs 0.55 ms). ``repr`` round-trips floats."""
    return "{" + ",".join(map(repr, values)) + "}"


def _share(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValidationError("profitable_share", f"must be in [0, 1], got {value}")
    return value


def rebuild(engine: sa.Engine) -> int:
    """Rebuild the sampling index from ``v_rl_replay``; returns the replayable count."""
    with engine.begin() as conn:
        return int(conn.execute(queries.get("replay.rebuild")).scalar_one())


def fold_draws(engine: sa.Engine) -> int:
    """Fold every pending draw (batches never written back) into ``experiences``; returns the batches."""
    with engine.begin() as conn:
        return int(conn.execute(queries.get("replay.fold_draws")).scalar_one())


def index_problems(engine: sa.Engine) -> list[dict]:
    """Inconsistencies between the sampling index and ``v_rl_replay`` (empty when healthy)."""
    with engine.connect() as conn:
        dense = [dict(r, problem="bucket") for r in conn.execute(queries.get("replay.index_check")).mappings()]
        rows = [dict(r) for r in conn.execute(queries.get("replay.index_mismatches")).mappings()]
    return dense + rows
