"""The reference multi-timeframe CNN (``app.nets.cnn:build``).

One small 1-D convolution tower per timeframe (bars along the time axis, OHLCV as channels),
each summarised by its mean and its last position (the most recent bars matter most), then a
shared trunk and three heads: action logits (direction / pivot classification), move regression
and confidence. GroupNorm, not BatchNorm: no buffers change in ``forward``, so a gradient replay
reproduces the whole model.
"""

from __future__ import annotations

import torch
from torch import nn

from app.nets.interface import ACTIONS, InputSpec


class TimeframeTower(nn.Module):
    def __init__(self, in_channels: int, channels: int, kernel: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, channels, kernel, padding=kernel // 2),
            nn.GroupNorm(1, channels),
            nn.GELU(),
            nn.Conv1d(channels, channels, kernel, padding=kernel // 2),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)  # (batch, channels, window)
        return torch.cat([h.mean(dim=2), h[:, :, -1]], dim=1)


class MultiTimeframeCNN(nn.Module):
    def __init__(
        self, input_spec: InputSpec, channels: int = 32, hidden: int = 128, kernel: int = 5, dropout: float = 0.1
    ):
        super().__init__()
        self.towers = nn.ModuleList(
            TimeframeTower(input_spec.channels, channels, kernel) for _ in input_spec.timeframes
        )
        self.trunk = nn.Sequential(
            nn.Linear(2 * channels * len(input_spec.timeframes), hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.action_head = nn.Linear(hidden, len(ACTIONS))
        self.move_head = nn.Linear(hidden, 1)
        self.confidence_head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.cat([tower(x[:, i]) for i, tower in enumerate(self.towers)], dim=1)
        h = self.trunk(features)
        return {
            "logits": self.action_head(h),
            "move": self.move_head(h).squeeze(1),
            "confidence": self.confidence_head(h).squeeze(1),
        }


def build(input_spec: InputSpec, **config) -> MultiTimeframeCNN:
    """Factory: ``config`` may set channels, hidden, kernel, dropout."""
    return MultiTimeframeCNN(input_spec, **config)
