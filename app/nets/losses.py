"""The CNN loss and its components.

    total = w_cls * classification + w_reg * regression + w_conf * confidence

* ``classification`` — cross-entropy of the action logits against the outcome's optimal action
  (long / short / hold), each sample weighted by ``1 + profitability_score`` so the most
  profitable setups count up to twice as much (weights normalised to mean 1 in the batch);
* ``regression`` — smooth L1 (Huber, beta 1) of the predicted move against the realised price
  move over the horizon, both in percent;
* ``confidence`` — binary cross-entropy of the confidence logit against whether the model's call
  (argmax of the logits, detached) equals the optimal action: the head learns how often the
  model is right, i.e. a calibrated confidence.

Default weights: 1.0 / 0.5 / 0.2 (``LossWeights``).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class LossWeights:
    classification: float = 1.0
    regression: float = 0.5
    confidence: float = 0.2


def cnn_loss(
    out: dict[str, torch.Tensor],
    action: torch.Tensor,
    move_pct: torch.Tensor,
    profitability: torch.Tensor,
    weights: LossWeights = LossWeights(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its components (as floats, for the step row)."""
    sample_w = 1.0 + profitability
    sample_w = sample_w / sample_w.mean()
    classification = (F.cross_entropy(out["logits"], action, reduction="none") * sample_w).mean()
    regression = F.smooth_l1_loss(out["move"], move_pct)
    correct = (out["logits"].detach().argmax(dim=1) == action).to(out["confidence"].dtype)
    confidence = F.binary_cross_entropy_with_logits(out["confidence"], correct)
    total = weights.classification * classification + weights.regression * regression + weights.confidence * confidence
    components = {
        "classification": float(classification.detach()),
        "regression": float(regression.detach()),
        "confidence": float(confidence.detach()),
    }
    return total, components
