"""A sampled replay batch, its importance weights and the beta annealing schedule.

Importance weights follow Schaul et al. (2016): w_i = (N * P(i)) ** -beta / max_j w_j, the
maximum taken over the batch so that weights only ever scale updates down. When part of the
batch is drawn from the profitable experiences only, P(i) is the probability that one draw of
this batch picks i: share * P_profitable(i) + (1 - share) * P_all(i).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BetaSchedule:
    """beta annealed linearly from ``start`` to 1 over ``steps`` samples, then held at 1."""

    start: float = 0.4
    steps: int = 10_000

    def __post_init__(self):
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"beta start must be in [0, 1], got {self.start}")
        if self.steps < 1:
            raise ValueError(f"beta steps must be >= 1, got {self.steps}")

    def at(self, step: int) -> float:
        return self.start + (1.0 - self.start) * min(1.0, max(step, 0) / self.steps)


@dataclasses.dataclass(frozen=True)
class ReplayBatch:
    """One batch: experience rows (in draw order, duplicates possible) with probabilities and weights.

    ``probabilities`` are the per-draw probabilities P(i) described above; ``weights`` the
    normalised importance weights; ``from_profitable`` marks draws made from the profitable-only
    stratum. ``replay_size`` is N, the number of replayable experiences when the batch was drawn.
    """

    ids: np.ndarray
    state_package_ids: np.ndarray
    next_state_package_ids: np.ndarray  # -1 where a terminal transition has no next state
    actions: list[str]
    rewards: np.ndarray
    dones: np.ndarray
    is_profitable: np.ndarray
    optimal_actions: list[str | None]
    priorities: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray
    from_profitable: np.ndarray
    beta: float
    replay_size: int

    def __len__(self) -> int:
        return len(self.ids)

    def profitability(self) -> dict:
        """What a training step records: mean realised profit (the rewards), share of profitable
        experiences, and share of draws made from the profitable-only stratum."""
        if not len(self):
            return {"mean_realised_profit": 0.0, "profitable_share": 0.0, "from_profitable_share": 0.0}
        return {
            "mean_realised_profit": float(self.rewards.mean()),
            "profitable_share": float(self.is_profitable.mean()),
            "from_profitable_share": float(self.from_profitable.mean()),
        }


def mixture_probabilities(p_all: np.ndarray, p_profitable: np.ndarray, share: float) -> np.ndarray:
    """P(i) of one draw when ``share`` of the draws come from the profitable-only distribution."""
    return share * np.nan_to_num(p_profitable, nan=0.0) + (1.0 - share) * p_all


def importance_weights(probabilities: np.ndarray, replay_size: int, beta: float) -> np.ndarray:
    """(N P(i)) ** -beta, normalised by the batch maximum (float32, in (0, 1])."""
    if len(probabilities) == 0:
        return np.zeros(0, dtype=np.float32)
    raw = np.power(replay_size * probabilities, -beta)
    return (raw / raw.max()).astype(np.float32)


def from_rows(names: list[str], rows: list[tuple], beta: float) -> ReplayBatch:
    """Build a batch from the rows (and column names) of the ``replay.sample`` query, already in draw
    order. The profitable share of the batch is that of its rows drawn from the profitable stratum (1)."""
    if not rows:
        raise ValueError("a replay batch needs at least one row")
    cols = dict(zip(names, zip(*rows)))
    from_profitable = np.array(cols["stratum"]) == 1
    # Column by column: NULLs become NaN in float arrays (no next state, unprofitable rows' P_profitable).
    probabilities = mixture_probabilities(
        np.array(cols["sampling_probability"], dtype=np.float64),
        np.array(cols["profitable_probability"], dtype=np.float64),
        float(from_profitable.mean()),
    )
    next_states = np.array(cols["next_state_package_id"], dtype=np.float64)
    replay_size = int(cols["replay_size"][0])
    return ReplayBatch(
        ids=np.array(cols["id"], dtype=np.int64),
        state_package_ids=np.array(cols["state_package_id"], dtype=np.int64),
        next_state_package_ids=np.where(np.isnan(next_states), -1, next_states).astype(np.int64),
        actions=list(cols["action"]),
        rewards=np.array(cols["reward"], dtype=np.float64),
        dones=np.array(cols["done"], dtype=bool),
        is_profitable=np.array(cols["is_profitable"], dtype=bool),
        optimal_actions=list(cols["optimal_action"]),
        priorities=np.array(cols["priority"], dtype=np.float64),
        probabilities=probabilities,
        weights=importance_weights(probabilities, replay_size, beta),
        from_profitable=from_profitable,
        beta=beta,
        replay_size=replay_size,
    )
