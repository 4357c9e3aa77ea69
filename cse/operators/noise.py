"""Measurement noise models, kept apart from the noise-free operators (deepinv's ``noise`` module).

Convention: images and noise-free measurements live on the **[-1, 1]** scale, and every noise
level here is on that scale. A standard deviation quoted on [0, 1] images (as deepinv and many
papers do) is half the number given here: ``std_[-1,1] = 2 * std_[0,1]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cse.seeding import randn


def check_generators(generators: Sequence[torch.Generator], y: Tensor) -> None:
    if len(generators) != y.shape[0]:
        raise ValueError(f"need one generator per sample: {len(generators)} for a batch of {y.shape[0]}")


class Noise(nn.Module, ABC):
    """``forward(y, generators)``: a noisy copy of ``y``, sample i drawn from ``generators[i]``."""

    @abstractmethod
    def forward(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor: ...

    def describe(self) -> dict:
        """The noise model's class and settings (JSON-ready), recorded with a trained CSE."""
        return {"class": type(self).__name__}


class GaussianNoise(Noise):
    """``y + std * n``, ``n ~ N(0, I)``; ``std`` on the [-1, 1] scale (0 is noise-free)."""

    def __init__(self, std: float = 0.0) -> None:
        super().__init__()
        if not std >= 0:
            raise ValueError(f"noise std must be >= 0, got {std}")
        self.std = std

    def forward(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        check_generators(generators, y)
        if self.std == 0:
            return y
        return y + self.std * randn(generators, y.shape[1:], like=y)

    def extra_repr(self) -> str:
        return f"std={self.std}"

    def describe(self) -> dict:
        return {**super().describe(), "std": self.std}


class PoissonNoise(Noise):
    """Photon (shot) noise: the intensity ``(y + 1) / 2`` on [0, 1] is counted with ``photons`` photons
    at full intensity, ``y_noisy = 2 * Poisson(photons * (y + 1) / 2) / photons - 1``.

    The mean is unchanged; the std at intensity ``v`` is ``2 * sqrt(v / photons)`` on [-1, 1] (so
    ``photons = 100`` gives std 0.2 at full intensity). This is deepinv's ``PoissonNoise(gain=1/photons,
    normalize=True)`` moved to the [-1, 1] scale. Intensities below 0 are clipped to 0 first.
    """

    def __init__(self, photons: float = 100.0) -> None:
        super().__init__()
        if not photons > 0:
            raise ValueError(f"photons must be > 0, got {photons}")
        self.photons = photons

    def forward(self, y: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        check_generators(generators, y)
        rate = (self.photons * (y.detach().float().cpu() + 1) / 2).clamp_min(0)
        counts = torch.stack([torch.poisson(r, generator=g) for r, g in zip(rate, generators, strict=True)])
        return (2 * counts / self.photons - 1).to(device=y.device, dtype=y.dtype)

    def extra_repr(self) -> str:
        return f"photons={self.photons}"

    def describe(self) -> dict:
        return {**super().describe(), "photons": self.photons}
