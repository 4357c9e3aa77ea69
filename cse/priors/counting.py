"""Counting network evaluations by wrapping a prior, so that samplers and priors stay stateless."""

from __future__ import annotations

import torch
from torch import Tensor

from cse.priors.base import Prior, PriorView, pixel_prior


class CountingPrior(PriorView):
    """``prior`` with its denoiser (and a latent prior's decoder) calls counted per sample.

    ``evaluations``: network forward passes (one per sample per ``denoise``); ``gradients``: of
    those, the ones a backward pass goes through (``u`` requires grad under autograd). Counting
    wraps the prior a sampler runs on: bind a CSE first (``CountingPrior(prior.conditioned(c))``).
    """

    def __init__(self, prior: Prior) -> None:
        super().__init__(prior)
        self.evaluations = 0
        self.gradients = 0
        self.decodes = 0
        self.decoder_gradients = 0
        self.latent = not pixel_prior(prior)

    def decode(self, latents: Tensor) -> Tensor:
        """Counted like ``denoise`` on a latent prior (``decodes``, ``decoder_gradients``); a pixel
        prior's decoder is the identity and counts nothing."""
        if self.latent:
            self.decodes += latents.shape[0]
            if torch.is_grad_enabled() and latents.requires_grad:
                self.decoder_gradients += latents.shape[0]
        return self.prior.decode(latents)

    def denoise(self, u: Tensor, sigma: Tensor | float) -> Tensor:
        self.evaluations += u.shape[0]
        if torch.is_grad_enabled() and u.requires_grad:
            self.gradients += u.shape[0]
        return self.prior.denoise(u, sigma)
