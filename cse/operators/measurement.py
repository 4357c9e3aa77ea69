"""A measurement: an operator ``A`` and a noise model together, ``y = noise(A(x))`` (deepinv's ``Physics``).

Images are on [-1, 1] and every noise level is on that scale (see :mod:`cse.operators.noise`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cse.operators.base import Operator
from cse.operators.noise import GaussianNoise, Noise
from cse.seeding import generators_from_seeds, seed_from_key


class Measurement(nn.Module):
    """``y = noise(A(x))`` with per-sample random streams, and the CSE's control image ``lift(y)``.

    Args:
        operator: the noise-free forward model ``A`` (samplers use it for guidance).
        noise: the noise model (default: none, ``GaussianNoise(0)``); its level is on [-1, 1].
    """

    def __init__(self, operator: Operator, noise: Noise | None = None) -> None:
        super().__init__()
        self.operator = operator
        self.noise = noise if noise is not None else GaussianNoise(0.0)

    def forward(self, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """``y`` for images ``x`` ``[B, C, H, W]``; sample i's noise is drawn from ``generators[i]``."""
        return self.noise(self.operator(x), generators)

    def measure_keys(self, images: Tensor, keys: Sequence[str], salt: str = "0") -> tuple[Tensor, Measurement]:
        """``y`` of each image with its own random streams (its noise, and whatever its operator draws),
        seeded by its key and ``salt``; and the measurement fixed for these images."""
        measurement = self.bind_keys(keys, images.shape, salt)
        noise = generators_from_seeds([seed_from_key(k, f"measurement:{salt}") for k in keys])
        return measurement(images, noise), measurement

    def bind_keys(self, keys: Sequence[str], image_shape: Sequence[int], salt: str = "0") -> Measurement:
        """``bind`` with the seeds ``measure_keys`` uses: the operator of each key's image, fixed."""
        return self.bind([seed_from_key(k, f"operator:{salt}") for k in keys], image_shape)

    def bind(self, seeds: Sequence[int], image_shape: Sequence[int]) -> Measurement:
        """The measurement with its operator fixed for these images (see ``Operator.bind``)."""
        operator = self.operator.bind(seeds, image_shape)
        return self if operator is self.operator else Measurement(operator, self.noise)

    def describe(self) -> dict:
        """The operator's and the noise model's settings (JSON-ready; see ``Operator.describe``)."""
        return {"operator": self.operator.describe(), "noise": self.noise.describe()}

    def lift(self, y: Tensor) -> Tensor:
        """The control image of ``y``: image-shaped, on the [-1, 1] scale (see ``Operator.lift``)."""
        return self.operator.lift(y)
