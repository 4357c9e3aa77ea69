"""DiffPIR (Zhu et al., CVPRW 2023, Algorithm 1), in VE form.

Each step: ``x0_hat = D(u, sigma_t)``; the data proximal step (eq. 12)
``x0 = argmin_x ||y - A x||^2 + rho_t ||x - x0_hat||^2`` with ``rho_t = lambda sigma_n^2 / sigma_t^2``
(eq. 13); then the DDIM-like step (eq. 15, the official code's ``eta = 0``) with noise-mixing
weight ``zeta``: ``u_next = x0 + sigma_next (sqrt(1 - zeta) eps + sqrt(zeta) n)``, ``eps = (u - x0) / sigma_t``.
The last step (to ``sigma = 0``) returns ``x0_hat`` without the data step, as the official code does.

Conventions at the boundary: the paper's VP ``x_t = sqrt(ab) (x0 + sigma_t n)`` with
``sigma_t^2 = (1 - ab) / ab`` is our state; the official code measures ``sigma_n`` on [0, 1] images
(half our [-1, 1] std) and floors it at 0.001, so ``rho_t = lambda max(sigma_y / 2, 0.001)^2 / sigma_t^2``
with ``sigma_y = ctx.noise_std`` (the data term's scale cancels between [0, 1] and [-1, 1]).

The proximal step is closed-form through the operator's SVD where it has one (``solve_prox``),
conjugate gradients for other linear operators; for a nonlinear operator or a latent prior it is
an iterative proximal step: ``prox_steps`` gradient steps of length ``1 / (1 + rho_t)`` on
``||A(decode(z)) - y||^2 / 2 + rho_t ||z - z0_hat||^2 / 2`` from ``z0_hat`` (not the paper's).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cse.operators.base import LinearOperator, Operator
from cse.operators.svd import per_sample, solve_prox
from cse.priors.base import Prior
from cse.samplers.common import Sampler, SamplingContext, Schedule, check_finite, check_step_size, pixel_prior

NOISE_FLOOR = 1e-3
"""The official code's floor on ``sigma_n`` (on [0, 1] images): noise-free measurements still get a finite ``rho``."""


def diffpir_rho(lambda_: float, sigma: float, noise_std: Tensor) -> Tensor:
    """Eq. 13 ``[B]``: ``lambda sigma_n^2 / sigma_t^2``, ``sigma_n`` on [0, 1] (our std halved), floored."""
    return lambda_ * (noise_std / 2).clamp_min(NOISE_FLOOR) ** 2 / sigma**2


def iterative_prox(
    prior: Prior, operator: Operator, y: Tensor, z0_hat: Tensor, rho: Tensor, steps: int
) -> Tensor:  # fmt: skip
    """Gradient steps of length ``1 / (1 + rho)`` on ``||A(decode(z)) - y||^2 / 2 + rho ||z - z0_hat||^2 / 2``."""
    rho_b = per_sample(rho, z0_hat)
    z = z0_hat.detach()
    for _ in range(steps):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            loss = 0.5 * (operator(prior.decode(z)) - y).square().flatten(1).sum(1)
            (grad,) = torch.autograd.grad(loss.sum(), z)
        z = z.detach() - (grad + rho_b * (z.detach() - z0_hat)) / (1 + rho_b)
    return z


def data_step(ctx: SamplingContext, x0_hat: Tensor, rho: Tensor, prox_steps: int) -> Tensor:
    """Eq. 12: closed form ``(A^T A + rho I)^{-1} (A^T y + rho x0_hat)`` for a linear operator on a
    pixel prior, the iterative proximal step otherwise."""
    if isinstance(ctx.operator, LinearOperator) and pixel_prior(ctx.prior):
        rhs = ctx.operator.adjoint(ctx.y) + per_sample(rho, x0_hat) * x0_hat
        return solve_prox(ctx.operator, rhs, rho)
    return iterative_prox(ctx.prior, ctx.operator, ctx.y, x0_hat, rho, prox_steps)


class DiffPIR(Sampler):
    """DiffPIR with ``lambda_`` (eq. 13; the official deblurring runs take 7) and the noise mixing
    ``zeta`` (0.3, the official runs'; the step tables tune it, lambda having no effect without noise).
    ``prox_steps``: of the iterative proximal step
    (whose step ``1 / (1 + rho)`` is stable where ``||A decode|| <= 1``, as for blur, resizing, masks)."""

    def __init__(
        self,
        lambda_: float = 7.0,
        zeta: float = 0.3,
        num_steps: int = 100,
        prox_steps: int = 10,
        eta: float = 0.0,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(num_steps, eta, schedule)
        if eta != 0:
            raise ValueError(f"DiffPIR runs the official code's eta = 0 (zeta mixes the noise), got eta={eta}")
        if not 0 <= zeta <= 1:
            raise ValueError(f"zeta must lie in [0, 1], got {zeta}")
        if lambda_ <= 0 or prox_steps < 1:
            raise ValueError(f"need lambda_ > 0 and prox_steps >= 1, got {lambda_}, {prox_steps}")
        self.lambda_, self.zeta, self.prox_steps = check_step_size("lambda_", lambda_), zeta, prox_steps

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        x0_hat = ctx.denoise(u, sigma).detach()
        if sigma_next == 0:
            return x0_hat, {"x0_hat": x0_hat, "residual": check_finite(ctx.residual(x0_hat), sigma)}
        rho = diffpir_rho(self.lambda_, sigma, ctx.noise_std)
        x0 = data_step(ctx, x0_hat, rho, self.prox_steps)
        residual = check_finite(ctx.residual(x0), sigma)
        eps = (u - x0) / sigma
        u_next = x0 + sigma_next * ((1 - self.zeta) ** 0.5 * eps + self.zeta**0.5 * ctx.noise())
        return u_next, {"x0_hat": x0_hat, "x0": x0, "residual": residual}
