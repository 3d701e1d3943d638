"""The database-backed profit-weighted prioritized experience buffer (the seed's
ProfitWeightedExperienceBuffer).

Experiences live in ``experiences``; which of them may be replayed, and with what weight
(priority^alpha, boosted when profitable), is defined by the ``v_rl_replay`` view. A trigger-kept
index (``rl_replay_slots`` / ``rl_replay_buckets``) lets one SQL statement draw a batch exactly in
proportion to that weight in time independent of the table size (bucketed rejection sampling, see
``sql/functions/rl_replay_index/v0001.sql``). Random numbers come from a seeded numpy generator,
so a session's batches are reproducible given the same database state.

    buffer = ProfitWeightedExperienceBuffer(engine, seed=7)
    batch = buffer.sample(256)                       # half from profitable experiences by default
    buffer.update_priorities(batch.ids, td_errors)   # |td| + epsilon, re-indexed by trigger
"""

from __future__ import annotations

import math

import numpy as np
import sqlalchemy as sa

from app.config import Settings, get_settings
from app.db import queries
from app.errors import TrainsrvError, ValidationError
from app.replay import batch as batches

# A candidate is accepted with probability >= 1/2 (the index's bucketing); the expected rate comes
# with the replay sizes. Candidates = need / rate plus a margin of MARGIN_SD standard deviations, so
# a second round trip for a shortfall is rare while the statement stays small.
MARGIN_SD = 3.0
MIN_ACCEPTANCE = 0.5
MAX_ROUNDS = 20


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
        self.samples_drawn = 0

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, batch_size: int, prioritize_profitable: bool = True, *, symbol: str | None = None,
               beta: float | None = None) -> batches.ReplayBatch:
        """Draw ``batch_size`` experiences (with replacement) in proportion to their weight.

        With ``prioritize_profitable`` a ``profitable_share`` of the draws come from the profitable
        experiences only (when there are any), the rest from all. ``symbol`` restricts the draw
        (and the probabilities) to one symbol's experiences. Each drawn experience's
        ``times_sampled`` / ``last_sampled_at`` are updated in the same statement.
        """
        if batch_size < 1:
            raise ValidationError("batch_size", f"must be >= 1, got {batch_size}")
        beta = self.beta.at(self.samples_drawn) if beta is None else beta
        with self.engine.begin() as conn:
            sizes = conn.execute(queries.get("replay.sizes"), {"symbol": symbol}).one()
            if sizes.total == 0:
                scope = f"for symbol {symbol!r}" if symbol else "at all"
                raise EmptyReplay(f"no replayable experiences {scope}: none exist, or none has valid packages")
            share = self.profitable_share if prioritize_profitable and sizes.profitable > 0 else 0.0
            need_profitable = round(share * batch_size)
            rates = (_rate(sizes.acceptance_all), _rate(sizes.acceptance_profitable))
            rows = self._draw(conn, symbol, need_profitable, batch_size - need_profitable, rates)
        self.samples_drawn += 1
        return batches.from_rows(rows, need_profitable / batch_size, beta)

    def _draw(self, conn: sa.Connection, symbol: str | None, need_profitable: int, need_all: int,
              rates: tuple[float, float]) -> list:
        rows: list = []
        for _ in range(MAX_ROUNDS):
            params = dict(self._candidates(need_profitable, need_all, rates), symbol=symbol)
            got = conn.execute(queries.get("replay.sample"), params).all()
            rows.extend(got)
            need_profitable -= sum(1 for r in got if r.stratum == 1)
            need_all -= sum(1 for r in got if r.stratum == 0)
            if need_profitable <= 0 and need_all <= 0:
                return rows
        raise TrainsrvError(f"replay sampling fell short after {MAX_ROUNDS} rounds: the sampling index may be "
                            "inconsistent (see replay.buffer.index_problems; `SELECT rl_replay_rebuild()` repairs it)")

    def _candidates(self, need_profitable: int, need_all: int, rates: tuple[float, float]) -> dict:
        counts = [_candidates_for(need_all, rates[0]), _candidates_for(need_profitable, rates[1])]
        total = sum(counts)
        return {
            "strata": [0] * counts[0] + [1] * counts[1],
            "u_bucket": self.rng.random(total).tolist(),
            "u_slot": self.rng.random(total).tolist(),
            "u_accept": self.rng.random(total).tolist(),
            "need_all": need_all,
            "need_profitable": need_profitable,
        }

    # -- priorities ---------------------------------------------------------------------------

    def update_priorities(self, ids, td_errors) -> int:
        """Set each experience's priority to |TD error| + epsilon; returns the rows updated.

        An id given more than once keeps its largest error. The sampling index follows by trigger.
        """
        ids = np.asarray(ids, dtype=np.int64).ravel()
        errors = np.abs(np.asarray(td_errors, dtype=np.float64).ravel())
        if ids.shape != errors.shape:
            raise ValidationError("td_errors", f"has {errors.size} values for {ids.size} ids")
        if not np.isfinite(errors).all():
            raise ValidationError("td_errors", "must be finite (got NaN or infinity)")
        if ids.size == 0:
            return 0
        unique, inverse = np.unique(ids, return_inverse=True)
        priorities = np.zeros(unique.size)
        np.maximum.at(priorities, inverse, errors)
        priorities += self.priority_epsilon
        with self.engine.begin() as conn:
            result = conn.execute(queries.get("replay.update_priorities"),
                                  {"ids": unique.tolist(), "priorities": priorities.tolist()})
        return result.rowcount

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


def _candidates_for(need: int, rate: float) -> int:
    """Enough candidates that ``need`` of them are accepted at ``rate`` with high probability."""
    if need <= 0:
        return 0
    mean = need / rate
    return math.ceil(mean + MARGIN_SD * math.sqrt(mean * (1 - rate) / rate) + 2)


def _rate(value: float | None) -> float:
    # Invalid rows found at sample time are rejections too; never plan below the guaranteed rate.
    return min(1.0, max(MIN_ACCEPTANCE, value or MIN_ACCEPTANCE))


def _share(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValidationError("profitable_share", f"must be in [0, 1], got {value}")
    return value


def rebuild(engine: sa.Engine) -> int:
    """Rebuild the sampling index from ``v_rl_replay``; returns the replayable count."""
    with engine.begin() as conn:
        return int(conn.execute(queries.get("replay.rebuild")).scalar_one())


def index_problems(engine: sa.Engine) -> list[dict]:
    """Inconsistencies between the sampling index and ``v_rl_replay`` (empty when healthy)."""
    with engine.connect() as conn:
        dense = [dict(r, problem="bucket") for r in conn.execute(queries.get("replay.index_check")).mappings()]
        rows = [dict(r) for r in conn.execute(queries.get("replay.index_mismatches")).mappings()]
    return dense + rows
