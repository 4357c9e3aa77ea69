"""DDRM (Kawar et al., NeurIPS 2022), eqs. 7-8 in the spectral space of ``A = U S V^T``.

The paper writes its chain in VE form already (``x_t = x_0 + sigma_t n``), which is our state: no
conversion. With ``xb = V^T x``, ``yb = S^+ U^T y`` and ``sigma_y`` the measurement's noise std
(``ctx.noise_std``), each coefficient ``i`` of ``x_{t-1}`` (at ``sigma' = sigma_{t-1}``) is drawn
around ``xb0 = V^T D(x_t, sigma_t)`` by eq. 8:

- ``s_i = 0``: ``xb0 + sqrt(1 - eta^2) sigma' (xb_t - xb0) / sigma_t + eta sigma' n``;
- ``s_i sigma' < sigma_y``: ``xb0 + sqrt(1 - eta^2) sigma' (yb - xb0) s_i / sigma_y + eta sigma' n``;
- ``s_i sigma' > sigma_y``: ``(1 - eta_b) xb0 + eta_b yb + sqrt(sigma'^2 - sigma_y^2 eta_b^2 / s_i^2) n``;

and ``x_T`` by eq. 7 (``yb + sqrt(sigma_T^2 - sigma_y^2 / s_i^2) n`` where ``s_i sigma_T > sigma_y``,
``sigma_T n`` elsewhere). A coefficient with ``s_i sigma' = sigma_y`` (the last step without noise)
takes the first case, as the official code does. Pixel priors only: the SVD is of ``A`` on images.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cse.operators.base import Operator
from cse.operators.svd import spectral_measurement, svd_of
from cse.priors.base import Prior
from cse.samplers.common import Sampler, SamplingContext, Schedule, batch_view, check_finite, check_spectral


def ddrm_coefficients(
    xb0: Tensor, xbt: Tensor, yb: Tensor, s: Tensor, sigma: float, sigma_next: float, sigma_y: Tensor, noise: Tensor,
    eta: float, eta_b: float,
) -> Tensor:  # fmt: skip
    """Eq. 8: the next state's coefficients from ``xb0``, ``xb_t``, ``yb`` and ``s`` (``sigma_y`` ``[B]``)."""
    sy = batch_view(sigma_y, xb0)
    s_safe = torch.where(s > 0, s, torch.ones_like(s))
    keep = (1 - eta**2) ** 0.5 * sigma_next
    unobserved = xb0 + keep * (xbt - xb0) / sigma + eta * sigma_next * noise
    less_noisy = xb0 + keep * (yb - xb0) * s / sy.clamp_min(torch.finfo(xb0.dtype).tiny) + eta * sigma_next * noise
    spread = (sigma_next**2 - sy**2 * eta_b**2 / s_safe**2).clamp_min(0).sqrt()
    noisier = (1 - eta_b) * xb0 + eta_b * yb + spread * noise
    after, before = (s > 0) & (s * sigma_next < sy), (s > 0) & (s * sigma_next > sy)
    return torch.where(before, noisier, torch.where(after, less_noisy, unobserved))


class DDRM(Sampler):
    """DDRM with the paper's ``eta = 0.85`` and ``eta_b = 1`` (its defaults): ``eta`` is the base
    class's solver mix, here DDRM's own (0 deterministic, 1 the full noise of each case)."""

    linear_only = True

    def __init__(
        self, num_steps: int = 20, eta: float = 0.85, eta_b: float = 1.0, schedule: Schedule | None = None
    ) -> None:
        super().__init__(num_steps, eta, schedule)
        if not 0 <= eta_b <= 1:
            raise ValueError(f"eta_b must lie in [0, 1], got {eta_b}")
        self.eta_b = eta_b

    def validate(self, prior: Prior, operator: Operator | None, y: Tensor | None) -> None:
        super().validate(prior, operator, y)
        check_spectral("DDRM", prior, operator)

    def initial_state(self, sigma: float, ctx: SamplingContext) -> Tensor:
        """Eq. 7: ``yb + sqrt(sigma_T^2 - sigma_y^2 / s^2) n`` where ``s sigma_T > sigma_y``, else ``sigma_T n``."""
        noise = ctx.noise()
        svd = svd_of(ctx.operator, noise)
        yb, s = spectral_measurement(svd, ctx.y, noise)
        sy = batch_view(ctx.noise_std, noise)
        informed = s * sigma > sy
        spread = (sigma**2 - sy**2 / torch.where(s > 0, s, torch.ones_like(s)) ** 2).clamp_min(0).sqrt()
        return svd.v(torch.where(informed, yb + spread * noise, sigma * noise))

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        x0_hat = ctx.denoise(u, sigma)
        svd = svd_of(ctx.operator, u)
        yb, s = spectral_measurement(svd, ctx.y, u)
        xb = ddrm_coefficients(
            svd.vt(x0_hat), svd.vt(u), yb, s, sigma, sigma_next, ctx.noise_std, ctx.noise(), ctx.eta, self.eta_b
        )
        residual = check_finite(ctx.residual(x0_hat), sigma)
        return svd.v(xb), {"x0_hat": x0_hat, "residual": residual}
