"""RED-diff: variational diffusion posterior sampling (Mardani et al., ICLR 2024, Algorithm 1), in VE form.

The state is the variational mean ``mu`` (of the prior's space: latents for a latent prior), not a
noisy state. At each level ``sigma_t``, from high to low noise: ``x_t = mu + sigma_t n`` (the paper's
VP ``alpha_t mu + sigma_t n``, divided by ``alpha_t``), ``eps_hat = (x_t - D(x_t, sigma_t)) / sigma_t``
without back-propagation through the network, and one Adam step on

    ||y - A(decode(mu))||^2 / (2 m)  +  lambda_t sg(eps_hat - n)^T mu / d,       lambda_t = lambda sigma_t,

``m``, ``d`` the values per measurement and per sample (the official code's means), ``sigma_t`` its
``sqrt(1 - ab) / sqrt(ab)`` weighting ("linear"), observation weight 1 (the official code does not
divide by ``sigma_y``; ``ctx.noise_std`` is unused). ``mu`` starts at the pseudo-inverse ``A^+ y``
(through the SVD) where ``A`` has one on a pixel prior, else at ``encode(lift(y))`` (0 if that is
not of the state's shape). Adam (betas 0.9,
0.99, the official code's) acts element-wise, so a sample's result does not depend on its batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cse.operators.svd import has_svd, spectral_measurement, svd_of
from cse.samplers.common import Sampler, SamplingContext, Schedule, check_finite, check_step_size, pixel_prior

BETAS = (0.9, 0.99)


def pseudo_inverse(ctx: SamplingContext, like: Tensor) -> Tensor:
    """``A^+ y = V S^+ U^T y`` for images like ``like`` (``S^+`` to the numerical rank: ``RANK_FLOOR``)."""
    svd = svd_of(ctx.operator, like)
    return svd.v(spectral_measurement(svd, ctx.y, like)[0])


def adam_update(mu: Tensor, grad: Tensor, memory: dict, lr: float, eps: float = 1e-8) -> Tensor:
    """One Adam step (``torch.optim.Adam``'s, betas ``BETAS``) with its moments in ``memory``."""
    m, v, k = memory.get("m", torch.zeros_like(mu)), memory.get("v", torch.zeros_like(mu)), memory.get("k", 0) + 1
    m = BETAS[0] * m + (1 - BETAS[0]) * grad
    v = BETAS[1] * v + (1 - BETAS[1]) * grad.square()
    memory.update(m=m, v=v, k=k)
    m_hat, v_hat = m / (1 - BETAS[0] ** k), v / (1 - BETAS[1] ** k)
    return mu - lr * m_hat / (v_hat.sqrt() + eps)


def reddiff_loss(ctx: SamplingContext, mu: Tensor, eps_gap: Tensor, weight: float) -> tuple[Tensor, Tensor]:
    """The per-sample loss ``[B]`` of Algorithm 1 and the residual ``||y - A(decode(mu))||``."""
    difference = ctx.operator(ctx.prior.decode(mu)) - ctx.y
    observation = difference.square().flatten(1).mean(1) / 2
    regulariser = (eps_gap * mu).flatten(1).mean(1)
    return observation + weight * regulariser, difference.detach().flatten(1).norm(dim=1)


class REDDiff(Sampler):
    """RED-diff with regularisation weight ``lambda_`` (0.25 in the official runs) and Adam's ``lr``
    (0.5, the official runs'); one Adam step per noise level."""

    def __init__(
        self, lambda_: float = 0.25, lr: float = 0.5, num_steps: int = 1000, schedule: Schedule | None = None
    ) -> None:
        super().__init__(num_steps, 1.0, schedule)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.lambda_, self.lr = check_step_size("lambda_", lambda_), lr

    def initial_state(self, sigma: float, ctx: SamplingContext) -> Tensor:
        """``A^+ y`` through the SVD where there is one (pixel priors), else ``encode(lift(y))`` (or 0)."""
        like = ctx.noise()  # the state's shape (and a draw, so every run consumes its stream alike)
        if has_svd(ctx.operator) and pixel_prior(ctx.prior):
            try:
                return pseudo_inverse(ctx, like)
            except TypeError:  # a non-separable kernel
                pass
        start = ctx.prior.encode(ctx.operator.lift(ctx.y))
        return start.to(like) if start.shape == like.shape else torch.zeros_like(like)

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        mu, noise = u.detach(), ctx.noise()
        with torch.no_grad():
            x_t = mu + sigma * noise
            x0_hat = ctx.denoise(x_t, sigma)
        eps_gap = (x_t - x0_hat) / sigma - noise
        with torch.enable_grad():
            leaf = mu.clone().requires_grad_(True)
            loss, residual = reddiff_loss(ctx, leaf, eps_gap, self.lambda_ * sigma)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        check_finite(residual + grad.flatten(1).sum(1), sigma)
        return adam_update(mu, grad, ctx.memory, self.lr), {"x0_hat": x0_hat, "mu": mu, "residual": residual}
