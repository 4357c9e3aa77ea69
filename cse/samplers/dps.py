"""Diffusion posterior sampling (Chung et al., ICLR 2023, Algorithm 1), in VE form."""

from __future__ import annotations

from torch import Tensor

from cse.samplers.common import (
    Denoiser,
    Residual,
    Sampler,
    SamplingContext,
    Schedule,
    StepScaling,
    ancestral_step,
    check_step_scaling,
    check_step_size,
    measurement_grad,
    scaled_step,
)


def dps(
    u: Tensor,
    sigma: float,
    sigma_next: float,
    denoise: Denoiser,
    residual: Residual,
    noise: Tensor,
    zeta: float,
    eta: float = 1.0,
) -> tuple[Tensor, dict]:
    """``u_next = mu + sigma_up n - zeta grad_u ||A(D(u)) - y||`` (the paper's eq. 4 step)."""
    grad, x0_hat, res = measurement_grad(u, sigma, denoise, residual)
    mu, sigma_up = ancestral_step(u, x0_hat, sigma, sigma_next, eta)
    return mu + sigma_up * noise - zeta * grad, {"x0_hat": x0_hat, "residual": res}


class DPS(Sampler):
    """DPS with step size ``zeta`` on the non-squared residual (4.8 for SRx8, 0.6 for blur on SD2).

    ``eta = 0`` is DPS on the DDIM solver (the paper's Table 9). ``step_scaling="noise_level"``
    takes ``zeta (sigma^2 - sigma_next^2)`` at each step instead of a constant (see ``scaled_step``).
    """

    def __init__(
        self,
        zeta: float = 1.0,
        num_steps: int = 500,
        eta: float = 1.0,
        schedule: Schedule | None = None,
        step_scaling: StepScaling = "constant",
    ) -> None:
        super().__init__(num_steps, eta, schedule)
        self.zeta, self.step_scaling = check_step_size("zeta", zeta), check_step_scaling(step_scaling)

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        zeta = scaled_step(self.zeta, sigma, sigma_next, self.step_scaling)
        return dps(u, sigma, sigma_next, ctx.denoise, ctx.residual, ctx.noise(), zeta, ctx.eta)
