"""An in-memory prioritized replay buffer on a sum tree: the reference for the database sampler.

The textbook structure (Schaul et al. 2016; OpenAI baselines' SegmentTree): a complete binary
tree over a power-of-two capacity whose leaves hold p_i^alpha and whose inner nodes hold the sum
of their children. Sampling draws u uniformly in [0, total) and walks down from the root;
a priority update rewrites one leaf and its log2(capacity) ancestors. It holds the same
quantities as the database buffer (weights, profitable flags) so the two can be compared on
the same data: ``bench/bench_replay.py`` measures both in one run.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """Sums over a fixed number of non-negative leaf values, with prefix-sum search."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = 1 << (capacity - 1).bit_length()
        self.nodes = np.zeros(2 * self.capacity, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def set(self, index: int, value: float) -> None:
        """Set leaf ``index`` to ``value`` and refresh its ancestors."""
        node = index + self.capacity
        self.nodes[node] = value
        node //= 2
        while node >= 1:
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]
            node //= 2

    def set_many(self, values: np.ndarray) -> None:
        """Fill leaves 0 .. len(values)-1 and rebuild every inner node (bulk load)."""
        self.nodes[self.capacity : self.capacity + len(values)] = values
        for level_start in _levels(self.capacity):
            width = level_start
            self.nodes[level_start : level_start + width] = (
                self.nodes[2 * level_start : 4 * level_start : 2]
                + self.nodes[2 * level_start + 1 : 4 * level_start : 2]
            )

    def find(self, mass: float) -> int:
        """The leaf whose cumulative range [prefix, prefix + value) contains ``mass``."""
        node = 1
        while node < self.capacity:
            left = 2 * node
            if mass < self.nodes[left]:
                node = left
            else:
                mass -= self.nodes[left]
                node = left + 1
        return node - self.capacity

    def leaf(self, index: int) -> float:
        return float(self.nodes[index + self.capacity])


def _levels(capacity: int):
    """Start index of each inner level, deepest first (capacity/2, capacity/4, ..., 1)."""
    start = capacity // 2
    while start >= 1:
        yield start
        start //= 2


class SumTreeReplay:
    """Prioritized replay in memory: the same weights, mix and importance weights as the DB buffer.

    ``weights`` are the rows' sample weights (priority^alpha times the profit boost); a second
    tree over the profitable rows serves the profitable share of each batch.
    """

    def __init__(
        self,
        weights: np.ndarray,
        is_profitable: np.ndarray,
        rows: dict[str, np.ndarray],
        *,
        alpha: float,
        profit_boost: float,
        seed: int | None = None,
    ):
        self.alpha, self.profit_boost = alpha, profit_boost
        self.is_profitable = np.asarray(is_profitable, dtype=bool)
        self.rows = rows
        self.size = len(weights)
        self.all = SumTree(self.size)
        self.profitable = SumTree(self.size)
        self.all.set_many(np.asarray(weights, dtype=np.float64))
        self.profitable.set_many(np.where(self.is_profitable, weights, 0.0))
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int, profitable_share: float = 0.5, beta: float = 0.4) -> dict:
        """Indices, probabilities, importance weights and the gathered rows of one batch."""
        n_prof = round(profitable_share * batch_size) if self.profitable.total > 0 else 0
        share = n_prof / batch_size
        idx = np.empty(batch_size, dtype=np.int64)
        for k in range(batch_size):
            tree = self.profitable if k < n_prof else self.all
            idx[k] = tree.find(self.rng.random() * tree.total)
        w = self.all.nodes[idx + self.all.capacity]
        p_prof = np.where(self.is_profitable[idx], w / max(self.profitable.total, 1e-300), 0.0)
        probabilities = share * p_prof + (1 - share) * w / self.all.total
        raw = np.power(self.size * probabilities, -beta)
        batch = {name: values[idx] for name, values in self.rows.items()}
        return {"indices": idx, "probabilities": probabilities, "weights": raw / raw.max(), "rows": batch}

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray, epsilon: float = 1e-6) -> None:
        """priority = |td| + epsilon; weight = priority^alpha, boosted when profitable."""
        priorities = np.abs(td_errors) + epsilon
        for i, p in zip(indices.tolist(), priorities.tolist()):
            weight = p**self.alpha * (self.profit_boost if self.is_profitable[i] else 1.0)
            self.all.set(i, weight)
            if self.is_profitable[i]:
                self.profitable.set(i, weight)
