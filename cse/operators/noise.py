"""Measurement noise, kept apart from the noise-free operators."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cse.seeding import randn


class GaussianNoise(nn.Module):
    """``y + std * n`` with ``n`` drawn per sample from its own generator."""

    def __init__(self, std: float = 0.0) -> None:
        super().__init__()
        if std < 0:
            raise ValueError(f"noise std must be >= 0, got {std}")
        self.std = std

    def forward(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        if len(generators) != y.shape[0]:
            raise ValueError(f"need one generator per sample: {len(generators)} for a batch of {y.shape[0]}")
        if self.std == 0:
            return y
        return y + self.std * randn(generators, y.shape[1:], like=y)
