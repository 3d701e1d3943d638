"""CNN training episodes, read from ``v_cnn_replay`` (the view owns the priority formula).

A session splits a symbol's episodes chronologically:

* the **evaluation slice** is every episode whose package time is at or after ``cutoff``, the
  ``1 - eval_fraction`` quantile of package times;
* **training candidates** are episodes whose outcome horizon ended at or before ``cutoff`` (so
  no training label overlaps the evaluation period), with ``profitability_score >=
  min_profitability`` and, when ``min_profit_r`` is given, ``profit_r > min_profit_r`` (the
  replay threshold: 0 keeps profitable calls only) — or, with ``keep_holds``, whose optimal action was
  hold; all of them, or the ``max_episodes`` highest ``training_priority`` ones when it is set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from app.db import queries
from app.errors import TrainsrvError


@dataclasses.dataclass(frozen=True)
class Episode:
    episode_id: int
    package_id: int
    symbol: str
    ts: dt.datetime
    horizon_end: dt.datetime
    optimal_action: str
    move_pct: float
    price_return: float
    actual_profit: float
    profitability_score: float
    is_profitable: bool
    is_premium: bool
    times_trained: int
    training_priority: float


@dataclasses.dataclass(frozen=True)
class Split:
    cutoff: dt.datetime
    train: list[Episode]
    evaluation: list[Episode]


class NoEpisodes(TrainsrvError):
    """Nothing to train on: the message says which filter left nothing."""


def _episodes(result) -> list[Episode]:
    return [Episode(**row) for row in result.mappings()]


def split(
    conn: sa.Connection,
    symbol: str,
    *,
    min_profitability: float,
    max_episodes: int,
    eval_fraction: float,
    min_profit_r: float | None = None,
    keep_holds: bool = False,
) -> Split:
    """The training episodes and the later evaluation slice of ``symbol`` (see module docstring)."""
    row = conn.execute(queries.get("trainer.eval_cutoff"), {"symbol": symbol, "eval_fraction": eval_fraction}).one()
    if not row.episodes:
        raise NoEpisodes(f"symbol {symbol!r} has no episodes (valid package + validated outcome) in v_cnn_replay")
    train = _episodes(
        conn.execute(
            queries.get("trainer.training_episodes"),
            {
                "symbol": symbol,
                "cutoff": row.cutoff,
                "min_profitability": min_profitability,
                "min_profit_r": min_profit_r,
                "max_episodes": max_episodes,
                "keep_holds": keep_holds,
            },
        )
    )
    if not train:
        raise NoEpisodes(
            f"symbol {symbol!r}: none of its {row.episodes} episodes before {row.cutoff} has "
            f"profitability_score >= {min_profitability}"
            + (f" and profit_r > {min_profit_r}" if min_profit_r is not None else "")
            + " (lower --min-profitability / --min-profit-r)"
        )
    # Priority decides which episodes; time decides the order they are stored and batched in, so a
    # session is reproducible whatever the priorities are when it is resumed or repeated.
    train.sort(key=lambda e: (e.ts, e.episode_id))
    evaluation = _episodes(
        conn.execute(queries.get("trainer.evaluation_episodes"), {"symbol": symbol, "cutoff": row.cutoff})
    )
    return Split(row.cutoff, train, evaluation)


def by_ids(conn: sa.Connection, ids: list[int]) -> list[Episode]:
    """Episodes with these ids, in the order given; raises when one is no longer an episode."""
    found = {e.episode_id: e for e in _episodes(conn.execute(queries.get("trainer.episodes_by_id"), {"ids": ids}))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise TrainsrvError(
            f"episodes {missing[:5]} are no longer in v_cnn_replay (package invalidated or outcome no longer validated)"
        )
    return [found[i] for i in ids]


def still_valid(conn: sa.Connection, ids: list[int]) -> list[Episode]:
    """The episodes among ``ids`` that are still episodes, oldest first (a later evaluation of a slice)."""
    found = _episodes(conn.execute(queries.get("trainer.episodes_by_id"), {"ids": ids}))
    return sorted(found, key=lambda e: (e.ts, e.episode_id))


def mark_trained(conn: sa.Connection, session_id: int, from_step: int, to_step: int) -> int:
    """Add how often each episode appeared in steps (from_step, to_step] to its times_trained."""
    result = conn.execute(
        queries.get("trainer.mark_trained"), {"session_id": session_id, "from_step": from_step, "to_step": to_step}
    )
    return result.rowcount
