"""PiGDM: pseudoinverse-guided diffusion (Song et al., ICLR 2023, eqs. 7-8), in VE form.

The likelihood ``p(y | x_t) ~ N(A x0_hat, r_t^2 A A^T + sigma_y^2 I)`` (eq. 7) gives the guidance
(eq. 8) ``g = (dx0_hat/dx_t)^T A^T (r_t^2 A A^T + sigma_y^2 I)^{-1} (y - A x0_hat)``: a vector-Jacobian
product through the network, with the inverse diagonal in ``A``'s SVD,
``A^T (r^2 A A^T + s_y^2 I)^{-1} = V diag(s / (r^2 s^2 + s_y^2)) U^T``.

Conversion: the paper's ``r_t^2 = sigma_t^2 / (1 + sigma_t^2)`` (VP, data of unit variance) is, with
our VE ``sigma``, ``r^2 = sigma^2 / (1 + sigma^2)``. The step is the base class's ancestral (``eta = 1``)
or DDIM step from ``x0_hat``, plus ``zeta r^2 g``: in VE form the update of the authors' group's code
(NVlabs/RED-diff ``algos/pgdm.py``: ``grad_term * sqrt(ab_s) sqrt(ab_t)`` in VP, i.e. ``grad_u`` in VE, of
``(A^+ y - A^+ A x0_hat)^T x0_hat``), of which ``r^2 A^T (r^2 A A^T + sigma_y^2 I)^{-1} = A^+`` for
``sigma_y = 0``; the weight ``r^2`` keeps that form for noisy ``y``. (Tweedie's ``sigma^2 g`` diverged on
the digits prior, whose Jacobian at high noise is far from ``r^2 / sigma^2``: measured, not assumed.)
``sigma_y`` is ``ctx.noise_std`` floored at ``noise_floor`` (1e-3 on [-1, 1]), so that a noise-free
measurement through tiny singular values (a blur) does not divide rounding errors by them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cse.operators.base import Operator
from cse.operators.svd import svd_of
from cse.priors.base import Prior
from cse.samplers.common import (
    Sampler,
    SamplingContext,
    Schedule,
    ancestral_step,
    batch_view,
    check_finite,
    check_spectral,
    check_step_size,
)


def pigdm_vector(ctx: SamplingContext, x0_hat: Tensor, sigma: float, noise_floor: float) -> tuple[Tensor, Tensor]:
    """``A^T (r^2 A A^T + sigma_y^2 I)^{-1} (y - A x0_hat)`` (eq. 8 before the Jacobian) and ``||y - A x0_hat||``."""
    svd = svd_of(ctx.operator, x0_hat)
    difference = ctx.y - ctx.operator(x0_hat)
    r2 = sigma**2 / (1 + sigma**2)
    sy2 = batch_view(ctx.noise_std.clamp_min(noise_floor), x0_hat) ** 2
    s = svd.singulars(x0_hat)
    weights = s / (r2 * s**2 + sy2)
    residual = check_finite(difference.flatten(1).norm(dim=1), sigma)
    return svd.v(weights * svd.ut(difference, x0_hat)), residual


class PiGDM(Sampler):
    """PiGDM with guidance weight ``zeta`` (1: the authors' code's) on the base class's solver."""

    linear_only = True

    def __init__(
        self,
        zeta: float = 1.0,
        num_steps: int = 100,
        noise_floor: float = 1e-3,
        eta: float = 1.0,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(num_steps, eta, schedule)
        if not noise_floor > 0:
            raise ValueError(f"noise_floor must be > 0, got {noise_floor}")
        self.zeta, self.noise_floor = check_step_size("zeta", zeta), noise_floor

    def validate(self, prior: Prior, operator: Operator | None, y: Tensor | None) -> None:
        super().validate(prior, operator, y)
        check_spectral("PiGDM", prior, operator)

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        with torch.enable_grad():
            leaf = u.detach().requires_grad_(True)
            x0_hat = ctx.denoise(leaf, sigma)
            vector, residual = pigdm_vector(ctx, x0_hat.detach(), sigma, self.noise_floor)
            (guidance,) = torch.autograd.grad(x0_hat, leaf, grad_outputs=vector)
        x0_hat, r2 = x0_hat.detach(), sigma**2 / (1 + sigma**2)
        mu, sigma_up = ancestral_step(u, x0_hat, sigma, sigma_next, ctx.eta)
        return mu + sigma_up * ctx.noise() + self.zeta * r2 * guidance, {"x0_hat": x0_hat, "residual": residual}
