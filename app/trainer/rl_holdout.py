"""The RL agent's evaluation slice and hold-out: train only on experiences whose data ended by its start.

An RL session is evaluated like the CNN, on the later slice of the symbol's RL episodes
(``v_rl_episodes``: validated RL calls on valid packages; the slice is every episode with package time
at or after ``cutoff``, the ``1 - eval_fraction`` quantile of their times), so it must not train on
anything that slice's labels could leak into: an experience may be replayed only when its prediction's
horizon, its state and its next state all ended by the cutoff (``v_training_data_end``, named query
``registry.rl_training_items``).

Batches are drawn from the replay as usual and the held-out rows dropped, drawing again until the
batch is full. Dropping rows from draws made in proportion to the weights leaves draws in proportion
to the weights among the kept rows, and the importance weights ``(N P(i)) ** -beta`` change only by a
factor common to every kept row, which the normalisation by the batch maximum removes: so they are
recomputed over the kept rows. Each draw asks for the batch divided by ``keep_share`` (the share of the
symbol's experiences that may be trained on) plus 15 %, so one statement usually fills the batch
(bench/results/models.md). Held-out and surplus rows that were drawn count in ``times_sampled`` (the
draw log is written by the sampler) but get no priority write-back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import sqlalchemy as sa

from app.db import queries
from app.errors import TrainsrvError
from app.rl_replay import batch as batches
from app.rl_replay.buffer import ProfitWeightedExperienceBuffer
from app.trainer import episodes as episodes_mod

MAX_DRAWS = 64


def evaluation_slice(
    conn: sa.Connection, symbol: str, eval_fraction: float
) -> tuple[dt.datetime | None, list[episodes_mod.Episode]]:
    """The cutoff and the episodes of the RL evaluation slice of ``symbol`` (None, [] without RL episodes)."""
    row = conn.execute(queries.get("registry.rl_eval_cutoff"), {"symbol": symbol, "eval_fraction": eval_fraction}).one()
    if row.cutoff is None:
        return None, []
    rows = conn.execute(queries.get("registry.rl_evaluation_episodes"), {"symbol": symbol, "cutoff": row.cutoff})
    return row.cutoff, [episodes_mod.Episode(**r) for r in rows.mappings()]


def episodes_by_id(conn: sa.Connection, ids: list[int]) -> list[episodes_mod.Episode]:
    """The RL episodes among ``ids`` that are still episodes, oldest first."""
    rows = conn.execute(queries.get("registry.rl_episodes_by_id"), {"ids": ids})
    return [episodes_mod.Episode(**r) for r in rows.mappings()]


def training_items(conn: sa.Connection, symbol: str, cutoff: dt.datetime) -> np.ndarray:
    """Sorted ids of the experiences of ``symbol`` an RL session with this cutoff may train on."""
    ids = conn.execute(queries.get("registry.rl_training_items"), {"symbol": symbol, "cutoff": cutoff}).scalars()
    return np.array(sorted(ids), dtype=np.int64)


def keep_share(conn: sa.Connection, symbol: str, allowed: np.ndarray) -> float:
    """The share of ``symbol``'s experiences that ``allowed`` holds (an estimate of a draw's kept share)."""
    total = conn.execute(queries.get("registry.symbol_experiences"), {"symbol": symbol}).scalar()
    return len(allowed) / total if total else 1.0


def sample(
    buffer: ProfitWeightedExperienceBuffer,
    allowed: np.ndarray,
    batch_size: int,
    *,
    symbol: str,
    beta: float,
    keep_share: float = 1.0,
) -> batches.ReplayBatch:
    """A batch of ``batch_size`` draws among the ``allowed`` experiences (see the module docstring), with the
    buffer's share of draws from the profitable stratum, as a plain draw has."""
    need_profitable = round(buffer.profitable_share * batch_size)
    parts, have, profitable = [], 0, 0
    for draw in range(MAX_DRAWS):
        missing = max(
            1, batch_size - have, need_profitable - profitable, batch_size - need_profitable - (have - profitable)
        )
        ask = min(4 * batch_size, math.ceil(missing / max(keep_share, 0.25) * 1.15) + 2)
        drawn = buffer.sample(ask, symbol=symbol, beta=beta)
        keep = np.isin(drawn.ids, allowed)
        parts.append(_take(drawn, keep))
        have += int(keep.sum())
        profitable += int(drawn.from_profitable[keep].sum())
        quotas = profitable >= need_profitable and have - profitable >= batch_size - need_profitable
        if have >= batch_size and (quotas or draw >= 7):  # a stratum held out entirely: fill from the other
            return _first(_concat(parts), batch_size, need_profitable)
    raise TrainsrvError(
        f"{MAX_DRAWS} draws of {batch_size} gave {have} experiences from before the evaluation "
        f"cutoff: too few of {symbol}'s replay weight lies before it (lower --eval-fraction)"
    )


def _take(b: batches.ReplayBatch, keep: np.ndarray) -> batches.ReplayBatch:
    picked = {}
    for field in dataclasses.fields(b):
        value = getattr(b, field.name)
        if isinstance(value, np.ndarray):
            picked[field.name] = value[keep]
        elif isinstance(value, list):
            picked[field.name] = [v for v, k in zip(value, keep) if k]
    return dataclasses.replace(b, **picked)


def _concat(parts: list[batches.ReplayBatch]) -> batches.ReplayBatch:
    first = parts[0]
    joined = {}
    for field in dataclasses.fields(first):
        value = getattr(first, field.name)
        if isinstance(value, np.ndarray):
            joined[field.name] = np.concatenate([getattr(p, field.name) for p in parts])
        elif isinstance(value, list):
            joined[field.name] = [v for p in parts for v in getattr(p, field.name)]
    return dataclasses.replace(first, **joined)


def _first(b: batches.ReplayBatch, n: int, need_profitable: int) -> batches.ReplayBatch:
    """``n`` rows, ``need_profitable`` of them from the profitable stratum when there are enough, in draw order,
    with the importance weights renormalised over them."""
    prof = np.flatnonzero(b.from_profitable)
    rest = np.flatnonzero(~b.from_profitable.astype(bool))
    take_p = prof[: max(need_profitable, n - len(rest))]
    take = np.concatenate([take_p, rest[: n - len(take_p)]])
    keep = np.zeros(len(b), dtype=bool)
    keep[take] = True
    kept = _take(b, keep)
    return dataclasses.replace(
        kept, weights=batches.importance_weights(kept.probabilities, kept.replay_size, kept.beta)
    )
