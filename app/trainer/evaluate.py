"""Out-of-sample evaluation on the chronologically later slice, and the session's training value.

The model's *call* on an episode is the argmax of its action logits. Its profit uses the
episode's realised price move (``price_return``, entry to exit over the horizon) and the same
round-trip cost as outcome labelling, ``2 * (fee_rate + slippage_rate)``:
long ``price_return - cost``, short ``-price_return - cost``, hold ``0``.

Metrics: ``accuracy`` (call == optimal action), ``baseline_accuracy`` (always the slice's most
frequent optimal action), ``calls`` (long / short calls), ``hit_rate`` (share of calls with
positive profit), ``total_profit`` and ``mean_profit_per_call`` (fractions of the entry price),
``move_mae_pct``, ``mean_confidence``, and the slice's first / last package time.

The same call metrics serve the RL agent (``policy_metrics``: its greedy policy's calls, argmax of
the Q-values) and the promotion gate, with the constant policies a model must beat:
``constant_profit_per_call`` (always long, always short) and ``best_constant_action`` /
``best_constant_profit_per_call``, the best of always long, always short and always hold (0).

``training_value`` (0..1, 0.5 = no evidence of skill) is how the session did on data it never saw:

    training_value = 0.5 * clip(0.5 + accuracy - baseline_accuracy, 0, 1)
                   + 0.5 * (0.5 + 0.5 * tanh(mean_profit_per_call / cost))

It is None when the evaluation slice is empty. (It gave 20 % to the drop of the in-sample training
loss until issue 21: that term ranked an arm that was worse out of sample above a better one.)
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from app.nets.interface import ACTIONS
from app.recording.convergence import ConvergenceTracker
from app.trainer.episodes import Episode


@torch.no_grad()
def predict(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The model's outputs on ``inputs`` in eval mode (restoring its training mode after)."""
    was_training = model.training
    model.eval()
    try:
        outs = [model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    finally:
        model.train(was_training)
    return {k: torch.cat([o[k] for o in outs]) for k in ("logits", "move", "confidence")}


def evaluate(model: torch.nn.Module, inputs: torch.Tensor, episodes: list[Episode], cost: float) -> dict:
    """Metrics of the model's calls on ``episodes`` (the later slice); empty dict when none."""
    if not episodes:
        return {}
    out = predict(model, inputs.to(next(model.parameters()).device))
    calls = [ACTIONS[i] for i in out["logits"].argmax(dim=1).tolist()]
    moves = torch.tensor([e.move_pct for e in episodes], dtype=out["move"].dtype)
    return {
        **policy_metrics(calls, episodes, cost),
        "move_mae_pct": float((out["move"].cpu() - moves).abs().mean()),
        "mean_confidence": float(torch.sigmoid(out["confidence"]).mean()),
    }


def policy_metrics(calls: list[str], episodes: list[Episode], cost: float) -> dict:
    """Accuracy, profit and hit rate of ``calls`` (one action per episode) against the slice's baselines."""
    if not episodes:
        return {}
    profits = [_profit(c, e.price_return, cost) for c, e in zip(calls, episodes) if c != "hold"]
    majority = Counter(e.optimal_action for e in episodes).most_common(1)[0][1]
    constant = {a: sum(_profit(a, e.price_return, cost) for e in episodes) / len(episodes) for a in ("long", "short")}
    best = max([*constant.items(), ("hold", 0.0)], key=lambda item: item[1])
    return {
        "episodes": len(episodes),
        "accuracy": sum(c == e.optimal_action for c, e in zip(calls, episodes)) / len(episodes),
        "baseline_accuracy": majority / len(episodes),
        "calls": len(profits),
        "hit_rate": sum(p > 0 for p in profits) / len(profits) if profits else None,
        "total_profit": sum(profits),
        "mean_profit_per_call": sum(profits) / len(profits) if profits else 0.0,
        "constant_profit_per_call": constant,
        "best_constant_action": best[0],
        "best_constant_profit_per_call": best[1],
        "from_ts": episodes[0].ts.isoformat(),
        "to_ts": episodes[-1].ts.isoformat(),
    }


@torch.no_grad()
def greedy_calls(q_network: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> list[str]:
    """The greedy policy's action (argmax of the Q-values) per input, in eval mode."""
    was_training = q_network.training
    q_network.eval()
    try:
        device = next(q_network.parameters()).device
        q = torch.cat([q_network(inputs[i : i + batch_size].to(device)) for i in range(0, len(inputs), batch_size)])
    finally:
        q_network.train(was_training)
    return [ACTIONS[i] for i in q.argmax(dim=1).tolist()]


def _profit(call: str, price_return: float, cost: float) -> float:
    if call == "long":
        return price_return - cost
    if call == "short":
        return -price_return - cost
    return 0.0


def training_value(tracker: ConvergenceTracker, evaluation: dict, cost: float) -> float | None:
    """The documented 0..1 score of a session (see the module docstring)."""
    if not evaluation:
        return None
    # Out of sample only: an in-sample loss drop said nothing about skill and ranked a worse arm higher.
    edge = min(1.0, max(0.0, 0.5 + evaluation["accuracy"] - evaluation["baseline_accuracy"]))
    profit = 0.5 + 0.5 * math.tanh(evaluation["mean_profit_per_call"] / max(cost, 1e-9))
    return round(0.5 * edge + 0.5 * profit, 6)
