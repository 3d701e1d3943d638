"""The RL agent: a pluggable Q-network (``package.module:factory``) trained as a double DQN.

Q-network plug-in, like the CNN's (``app.nets.interface``): ``factory(input_spec, **config)``
returns a ``torch.nn.Module`` whose ``forward(x)`` takes the same input tensor as the CNN,
``(batch, len(timeframes), CHANNELS, window)`` (``app.nets.inputs``), and returns Q-values
``(batch, 3)`` in ``ACTIONS`` order (long, short, hold). The reference is ``app.nets.dqn:build``.

``DoubleDQN`` holds the online network (the one the optimizer trains and the session records)
and a target network, hard-copied from it every ``target_update_every`` steps. Its loss
(van Hasselt et al. 2016, with the importance weights of prioritized replay):

* ``td``:     y = r + gamma * (1 - done) * Q_target(s', argmax_a Q_online(s', a)),
              TD error = y - Q_online(s, a), loss = mean(w * huber(TD error));
* ``policy``: cross-entropy of softmax(Q_online(s, .)) against the action that was optimal in
              hindsight (the outcome's ``optimal_action``), weighted by ``policy_weight``;
              a supervised margin in the spirit of DQfD that uses what outcomes tell us.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from app.errors import ValidationError
from app.nets.interface import ACTIONS, RL_REFERENCE, InputSpec, load_factory

REFERENCE = RL_REFERENCE


class QNetwork(nn.Module):
    """The reference Q-network: a small MLP over the flattened multi-timeframe window."""

    def __init__(self, input_spec: InputSpec, hidden: int = 128, layers: int = 2):
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ValidationError("model_config", f"hidden and layers must be >= 1, got {hidden}, {layers}")
        width = input_spec.channels * input_spec.window * len(input_spec.timeframes)
        blocks: list[nn.Module] = [nn.Flatten()]
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        blocks.append(nn.Linear(width, len(ACTIONS)))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build(input_spec: InputSpec, **config) -> nn.Module:
    """Factory of the reference Q-network (``app.nets.dqn:build``)."""
    return QNetwork(input_spec, **config)


def build_q_network(path: str, input_spec: InputSpec, config: dict | None = None) -> nn.Module:
    """Build the Q-network at ``path`` and check it returns ``(batch, 3)`` Q-values."""
    model = load_factory(path)(input_spec, **(config or {}))
    if not isinstance(model, nn.Module):
        raise ValidationError("model", f"{path} returned {type(model).__name__}, not a torch.nn.Module")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros((2, *input_spec.shape())))
    model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, len(ACTIONS)):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValidationError("model", f"{path}: forward must return Q-values of shape (2, {len(ACTIONS)}), got {got}")
    return model


@dataclasses.dataclass
class Transitions:
    """A batch as tensors: states, actions (indices), rewards, next states, done flags, weights."""

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_states: torch.Tensor
    dones: torch.Tensor
    weights: torch.Tensor
    optimal_actions: torch.Tensor  # -1 where unknown

    def to(self, device: torch.device) -> Transitions:
        return Transitions(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class DqnSettings:
    gamma: float = 0.9
    target_update_every: int = 50
    huber_delta: float = 1.0
    policy_weight: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.gamma < 1.0:
            raise ValidationError("gamma", f"must be in [0, 1), got {self.gamma}")
        if self.target_update_every < 1:
            raise ValidationError("target_update_every", f"must be >= 1, got {self.target_update_every}")
        if not self.huber_delta > 0:
            raise ValidationError("huber_delta", f"must be > 0, got {self.huber_delta}")
        if self.policy_weight < 0:
            raise ValidationError("policy_weight", f"must be >= 0, got {self.policy_weight}")


class DoubleDQN:
    """Online + target Q-networks and the double-DQN loss (see the module docstring)."""

    def __init__(self, online: nn.Module, settings: DqnSettings):
        self.online = online
        self.settings = settings
        self.target = copy.deepcopy(online).requires_grad_(False)

    def loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """Total loss, its components and the per-row TD errors (detached, for priorities)."""
        q_all = self.online(batch.states)
        q = q_all.gather(1, batch.actions[:, None]).squeeze(1)
        target = self.targets(batch)
        td = target - q
        td_loss = (batch.weights * F.huber_loss(q, target, reduction="none", delta=self.settings.huber_delta)).mean()
        policy_loss = self._policy_loss(q_all, batch.optimal_actions)
        total = td_loss + self.settings.policy_weight * policy_loss
        components = {
            "td": float(td_loss.detach()),
            "policy": float(policy_loss.detach()),
            "q_mean": float(q.detach().mean()),
            "target_mean": float(target.mean()),
            "abs_td_mean": float(td.detach().abs().mean()),
        }
        return total, components, td.detach()

    @torch.no_grad()
    def targets(self, batch: Transitions) -> torch.Tensor:
        """r + gamma * (1 - done) * Q_target(s', argmax Q_online(s'))."""
        best = self.online(batch.next_states).argmax(dim=1, keepdim=True)
        next_q = self.target(batch.next_states).gather(1, best).squeeze(1)
        return batch.rewards + self.settings.gamma * (1.0 - batch.dones) * next_q

    def _policy_loss(self, q_all: torch.Tensor, optimal: torch.Tensor) -> torch.Tensor:
        known = optimal >= 0
        if not bool(known.any()):
            return q_all.sum() * 0.0
        return F.cross_entropy(q_all[known], optimal[known])

    def after_step(self, step: int) -> None:
        """Refresh the target network every ``target_update_every`` steps."""
        if step % self.settings.target_update_every == 0:
            self.sync_target()

    def sync_target(self) -> None:
        self.target.load_state_dict(self.online.state_dict())

    @torch.no_grad()
    def act(self, states: torch.Tensor) -> list[str]:
        """Greedy actions of the online network."""
        return [ACTIONS[i] for i in self.online(states).argmax(dim=1).tolist()]
