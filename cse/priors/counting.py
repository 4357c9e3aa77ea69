"""Counting network evaluations by wrapping a prior, so that samplers and priors stay stateless."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cse.priors.base import Prior


class CountingPrior(Prior):
    """``prior`` with its denoiser calls counted per sample.

    ``evaluations``: network forward passes (one per sample per ``denoise``); ``gradients``: of
    those, the ones a backward pass goes through (``u`` requires grad under autograd).
    """

    def __init__(self, prior: Prior) -> None:
        super().__init__()
        self.prior = prior
        self.evaluations = 0
        self.gradients = 0

    @property
    def schedule(self):
        return self.prior.schedule

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.prior.sample_shape

    def denoise(self, u: Tensor, sigma: Tensor | float, control: Tensor | None = None) -> Tensor:
        self.evaluations += u.shape[0]
        if torch.is_grad_enabled() and u.requires_grad:
            self.gradients += u.shape[0]
        return self.prior.denoise(u, sigma, control)

    def state_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        return self.prior.state_shape(image_shape)

    def encode(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.prior.encode(images, noise)

    def decode(self, latents: Tensor) -> Tensor:
        return self.prior.decode(latents)

    def describe(self) -> dict:
        return self.prior.describe()
