"""DAPS: decoupled annealing posterior sampling (Zhang et al., CVPR 2025, Algorithm 1), in VE form.

At each annealing level ``sigma_t`` (the run's sigmas; DAPS is written in VE form already):

1. ``x0_hat``: the probability-flow ODE from ``x_t`` at ``sigma_t`` to 0 in ``ode_steps`` Euler (DDIM)
   steps on ``sigma_t (K - k) / K``; with one step it is ``D(x_t, sigma_t)``;
2. ``langevin_steps`` Langevin steps on ``x0`` for ``log p(y | x0) - ||x0 - x0_hat||^2 / (2 r_t^2)``,
   ``r_t = sigma_t`` (the paper's setting): ``x0 <- x0 - lr (A^T-gradient of ||A(decode(x0)) - y||^2 / (2 tau^2)
   + (x0 - x0_hat) / r_t^2) + sqrt(2 lr) n``, the step ``lr`` decaying linearly over the run from
   ``langevin_lr`` to ``lr_min_ratio`` of it (the official code's ``get_lr``);
3. ``x_{t-1} = x0 + sigma_{t-1} n``.

``tau``, the likelihood's std, is the measurement's ``ctx.noise_std`` floored at ``tau`` (0.01, the
official pixel configs' value, also for noise-free ``y``). On a latent prior this is LatentDAPS (the
DAPS authors'): the same chain on latents, the data term through the decoder. Gradients go through
the operator (and decoder), never through the network.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cse.samplers.common import (
    Denoiser,
    Sampler,
    SamplingContext,
    Schedule,
    ancestral_step,
    batch_view,
    check_finite,
    check_step_size,
)


def ode_estimate(u: Tensor, sigma: float, denoise: Denoiser, ode_steps: int) -> Tensor:
    """``x0_hat`` by ``ode_steps`` DDIM (probability-flow Euler) steps from ``sigma`` to 0, without gradients."""
    levels = [sigma * (ode_steps - k) / ode_steps for k in range(ode_steps + 1)]
    with torch.no_grad():
        for level, level_next in zip(levels[:-1], levels[1:], strict=True):
            x0_hat = denoise(u, level)
            u = ancestral_step(u, x0_hat, level, level_next, eta=0.0)[0]
    return x0_hat


def langevin(ctx: SamplingContext, x0_hat: Tensor, r: float, tau: Tensor, lr: float, steps: int) -> Tensor:
    """Step 2: Langevin dynamics on ``x0`` from ``x0_hat`` (``tau`` ``[B]``)."""
    tau2 = batch_view(tau, x0_hat) ** 2
    x = x0_hat
    for _ in range(steps):
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            error = (ctx.operator(ctx.prior.decode(leaf)) - ctx.y).square().flatten(1).sum(1)
            (grad,) = torch.autograd.grad(error.sum(), leaf)
        gradient = grad / (2 * tau2) + (x - x0_hat) / r**2
        x = x.detach() - lr * gradient + (2 * lr) ** 0.5 * ctx.noise()
    return x


class DAPS(Sampler):
    """DAPS with the tuned Langevin step ``langevin_lr`` (1e-4 in the official pixel configs),
    ``langevin_steps`` per level (official: 100; fewer here to keep the step budget comparable),
    ``ode_steps`` Euler steps for ``x0_hat`` (official DAPS-1K: 5), ``tau`` and ``lr_min_ratio`` (0.01)."""

    def __init__(
        self,
        langevin_lr: float = 1e-4,
        num_steps: int = 200,
        langevin_steps: int = 20,
        ode_steps: int = 2,
        tau: float = 0.01,
        lr_min_ratio: float = 0.01,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(num_steps, 1.0, schedule)
        if langevin_steps < 1 or ode_steps < 1:
            raise ValueError(f"need langevin_steps >= 1 and ode_steps >= 1, got {langevin_steps}, {ode_steps}")
        if not (tau > 0 and 0 < lr_min_ratio <= 1):
            raise ValueError(f"need tau > 0 and 0 < lr_min_ratio <= 1, got {tau}, {lr_min_ratio}")
        self.langevin_lr = check_step_size("langevin_lr", langevin_lr)
        self.langevin_steps, self.ode_steps, self.tau, self.lr_min_ratio = langevin_steps, ode_steps, tau, lr_min_ratio

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        x0_hat = ode_estimate(u, sigma, ctx.denoise, self.ode_steps)
        ratio = ctx.index / ctx.num_steps
        lr = self.langevin_lr * (1 + ratio * (self.lr_min_ratio - 1))
        x0 = langevin(ctx, x0_hat, sigma, ctx.noise_std.clamp_min(self.tau), lr, self.langevin_steps)
        residual = check_finite(ctx.residual(x0), sigma)
        return x0 + sigma_next * ctx.noise(), {"x0_hat": x0_hat, "x0": x0, "residual": residual}
