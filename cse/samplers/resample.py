"""ReSample (Song et al., ICLR 2024), as the paper's eqs. 37-39 state it and its research code runs it.

Every step is a DPS step. At a few steps, the Tweedie estimate is replaced by a hard data-consistent
one (eq. 37: optimised until ``A(D(z)) = y``, in latent space or in pixel space and then encoded),
and the next state is resampled around it (eqs. 38-39): in VP form
``z_prev ~ N((g sqrt(ab_prev) z0 + (1 - ab_prev) z'_prev) / (g + 1 - ab_prev), g (1 - ab_prev) / (g + 1 - ab_prev))``
with ``g = 40 (1 - ab_prev) / (1 - ab_t) (1 - ab_t / ab_prev)``, ``z'_prev`` the DPS step. Here it is
written in our VE form (``u = z / sqrt(ab)``, ``ab = 1 / (1 + sigma^2)``), with the alphas of the
current step (the research code indexes them by the loop counter, a bug not copied).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from cse.operators.base import Operator
from cse.priors.base import Prior
from cse.samplers.common import Sampler, SamplingContext, Schedule, check_step_size
from cse.samplers.dps import dps

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def consistent_estimate(
    prior: Prior,
    operator: Operator,
    y: Tensor,
    x0_hat: Tensor,
    space: Literal["latent", "pixel"] = "latent",
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
    lr: float = 5e-3,
    max_iters: int = 200,
    tolerance: float = 1e-6,
) -> Tensor:
    """Eq. 37: ``argmin ||A(D(z)) - y||^2 / n`` from ``z = x0_hat`` (or over images from
    ``D(x0_hat)``, then encoded), stopping each sample once its mean squared error is below
    ``tolerance``. The optimisers act element-wise on the sum of per-sample losses, so a sample's
    result does not depend on its batch."""
    with torch.enable_grad():
        start = x0_hat if space == "latent" else prior.decode(x0_hat)
        z = start.detach().clone().requires_grad_(True)
        step = OPTIMIZERS[optimizer]([z], lr=lr)
        done = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        for _ in range(max_iters):
            image = prior.decode(z) if space == "latent" else z
            error = (operator(image) - y).square().flatten(1).mean(1)
            done |= error.detach() < tolerance
            if done.all():
                break
            step.zero_grad()
            error.sum().backward()
            frozen = z.detach().clone()
            step.step()
            with torch.no_grad():
                z[done] = frozen[done]
    z = z.detach()
    return z if space == "latent" else prior.encode(z).detach()


def stochastic_resample(
    z0: Tensor, u_next: Tensor, sigma: float, sigma_next: float, noise: Tensor, variance_scale: float = 40.0
) -> Tensor:
    """Eqs. 38-39 in VE form: the precision-weighted mix of the consistent estimate ``z0`` and the
    DPS step ``u_next``, plus noise; ``g = variance_scale * sigma_up^2 * ab_prev`` is the paper's
    ``40 (1 - ab_prev) / (1 - ab_t) (1 - ab_t / ab_prev)``."""
    ab_prev = 1 / (1 + sigma_next**2)
    sigma_up2 = sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2
    g = variance_scale * sigma_up2 * ab_prev
    mean = (g * z0 + (1 - ab_prev) * u_next) / (g + 1 - ab_prev)
    variance = g * (1 - ab_prev) / ((g + 1 - ab_prev) * ab_prev)
    return mean + variance**0.5 * noise


class ReSample(Sampler):
    """DPS (``zeta``) with hard data consistency and resampling every ``every`` of the trajectory
    within its first ``until`` (fractions; the default is every 50 of 500 steps over the first
    fifth: steps 50 and 100, as the paper's research code), optimising with ``optimizer`` at
    ``lr`` for at most ``max_iters`` iterations or until the mean squared error is below ``tolerance``."""

    def __init__(
        self,
        zeta: float = 1.0,
        num_steps: int = 500,
        every: float = 0.1,
        until: float = 0.2,
        space: Literal["latent", "pixel"] = "latent",
        optimizer: Literal["adamw", "adam", "sgd"] = "adamw",
        lr: float = 5e-3,
        max_iters: int = 200,
        tolerance: float = 1e-6,
        variance_scale: float = 40.0,
        eta: float = 1.0,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(num_steps, eta, schedule)
        if space not in ("latent", "pixel") or optimizer not in OPTIMIZERS:
            raise ValueError(f"space must be 'latent' or 'pixel' and optimizer one of {sorted(OPTIMIZERS)}")
        if not (0 < every <= 1 and 0 <= until <= 1 and max_iters >= 0 and lr > 0 and variance_scale > 0):
            raise ValueError("need 0 < every <= 1, 0 <= until <= 1, max_iters >= 0, lr > 0, variance_scale > 0")
        self.zeta, self.every, self.until, self.space = check_step_size("zeta", zeta), every, until, space
        self.optimizer, self.lr, self.max_iters, self.tolerance = optimizer, lr, max_iters, tolerance
        self.variance_scale = variance_scale

    def consistency_step(self, index: int) -> bool:
        interval = max(1, round(self.every * self.num_steps))
        return 0 < index <= self.until * self.num_steps and index % interval == 0

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        u_next, report = dps(u, sigma, sigma_next, ctx.denoise, ctx.residual, ctx.noise(), self.zeta, ctx.eta)
        if sigma_next > 0 and self.consistency_step(ctx.index):
            z0 = consistent_estimate(
                ctx.prior, ctx.operator, ctx.y, report["x0_hat"], self.space, self.optimizer, self.lr, self.max_iters,
                self.tolerance,
            )  # fmt: skip
            u_next = stochastic_resample(z0, u_next, sigma, sigma_next, ctx.noise(), self.variance_scale)
            report["consistent_x0"] = z0
        return u_next, report
