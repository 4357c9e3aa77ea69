"""Unguided sampling: Euler-ancestral (eta = 1, DDPM in VE form) or DDIM (eta = 0)."""

from __future__ import annotations

import torch
from torch import Tensor

from cse.samplers.common import Denoiser, Sampler, SamplingContext, Schedule, ancestral_step


def ancestral(
    u: Tensor, sigma: float, sigma_next: float, denoise: Denoiser, noise: Tensor, eta: float = 1.0
) -> tuple[Tensor, Tensor]:
    """One prior step; returns ``(u_next, x0_hat)``."""
    with torch.no_grad():
        x0_hat = denoise(u, sigma)
    mu, sigma_up = ancestral_step(u, x0_hat, sigma, sigma_next, eta)
    return mu + sigma_up * noise, x0_hat


class Ancestral(Sampler):
    """Samples the prior; with a ControlNet attached this is the paper's "CSE" row (no guidance)."""

    guided = False

    def __init__(self, num_steps: int = 500, eta: float = 1.0, schedule: Schedule | None = None) -> None:
        super().__init__(num_steps, eta, schedule)

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        u_next, x0_hat = ancestral(u, sigma, sigma_next, ctx.denoise, ctx.noise(), ctx.eta)
        return u_next, {"x0_hat": x0_hat}
