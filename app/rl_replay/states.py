"""State tensors for replayed transitions, from input packages.

A state is the package's model input (``app.nets.inputs``: the same normalised multi-timeframe
window the CNN sees). Packages never change once stored (their hash is verified on read), so each
is decoded once per trainer and kept; a terminal transition's missing next state is all zeros
(its value is masked by ``done`` anyway).
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
import torch

from app.db import queries
from app.errors import TrainsrvError
from app.nets import inputs
from app.nets.dqn import Transitions
from app.nets.interface import ACTIONS, InputSpec
from app.rl_replay.batch import ReplayBatch

NO_STATE = -1


class PackageStates:
    """Decoded, normalised package inputs by package id (a per-trainer cache)."""

    def __init__(self, spec: InputSpec):
        self.spec = spec
        self._cache: dict[int, torch.Tensor] = {}

    @classmethod
    def for_symbol(cls, conn: sa.Connection, symbol: str) -> PackageStates:
        """A cache whose input spec is inferred from one replayable package of ``symbol``."""
        first = conn.execute(queries.get("replay.first_state_package"), {"symbol": symbol}).scalar()
        if first is None:
            raise TrainsrvError(f"no replayable experiences for symbol {symbol!r}")
        _, spec = inputs.load_inputs(conn, [first])
        return cls(spec)

    def states(self, conn: sa.Connection, package_ids: np.ndarray) -> torch.Tensor:
        """``(len(ids), *spec.shape())`` float32; ``NO_STATE`` ids give zeros."""
        missing = sorted({int(i) for i in package_ids if i != NO_STATE and int(i) not in self._cache})
        if missing:
            loaded, _ = inputs.load_inputs(conn, missing, self.spec)
            self._cache.update(zip(missing, loaded))
        zeros = torch.zeros(self.spec.shape())
        return torch.stack([zeros if i == NO_STATE else self._cache[int(i)] for i in package_ids])

    def transitions(self, conn: sa.Connection, batch: ReplayBatch, reward_scale: float) -> Transitions:
        """The batch as tensors for ``DoubleDQN.loss`` (rewards multiplied by ``reward_scale``)."""
        return Transitions(
            states=self.states(conn, batch.state_package_ids),
            actions=torch.tensor([ACTIONS.index(a) for a in batch.actions], dtype=torch.long),
            rewards=torch.tensor(batch.rewards * reward_scale, dtype=torch.float32),
            next_states=self.states(conn, batch.next_state_package_ids),
            dones=torch.tensor(batch.dones, dtype=torch.float32),
            weights=torch.from_numpy(batch.weights),
            optimal_actions=torch.tensor(
                [ACTIONS.index(a) if a in ACTIONS else -1 for a in batch.optimal_actions], dtype=torch.long
            ),
        )
