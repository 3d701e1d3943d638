"""A CNN plug-in that never looks at its input: three action scores, a move and a confidence that are
parameters. Whatever it learns is a constant policy, so it can never beat the best constant action:
the promotion gate must refuse it."""

import torch
from torch import nn


class Blind(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3))
        self.move = nn.Parameter(torch.zeros(()))
        self.confidence = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = x.shape[0]
        return {
            "logits": self.logits.expand(batch, 3),
            "move": self.move.expand(batch),
            "confidence": self.confidence.expand(batch),
        }


def build(input_spec, **config) -> nn.Module:
    return Blind()
