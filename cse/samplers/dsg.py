"""Diffusion with spherical Gaussian constraint (Yang et al., ICML 2024, Algorithm 1), in VE form."""

from __future__ import annotations

from torch import Tensor

from cse.samplers.common import (
    Denoiser,
    Residual,
    Sampler,
    SamplingContext,
    Schedule,
    ancestral_step,
    batch_view,
    measurement_grad,
    per_sample_norm,
    sphere_radius,
)


def dsg(
    u: Tensor,
    sigma: float,
    sigma_next: float,
    denoise: Denoiser,
    residual: Residual,
    noise: Tensor,
    guidance_rate: float,
    eta: float = 1.0,
) -> tuple[Tensor, dict]:
    """Mix the random step with the steepest descent direction and step to the sphere of radius
    ``sqrt(n) sigma_up`` around the unguided mean: ``d = d_sample + g (d* - d_sample)``."""
    grad, x0_hat, res = measurement_grad(u, sigma, denoise, residual)
    mu, sigma_up = ancestral_step(u, x0_hat, sigma, sigma_next, eta)
    radius = sphere_radius(sigma_up, u)
    if radius == 0:
        return mu, {"x0_hat": x0_hat, "residual": res, "mu": mu, "radius": radius}
    d_sample = sigma_up * noise
    d_star = -radius * grad / batch_view(per_sample_norm(grad).clamp_min(1e-12), grad)
    d = d_sample + guidance_rate * (d_star - d_sample)
    u_next = mu + radius * d / batch_view(per_sample_norm(d).clamp_min(1e-12), d)
    return u_next, {"x0_hat": x0_hat, "residual": res, "mu": mu, "radius": radius}


class DSG(Sampler):
    """DSG with ``guidance_rate`` g in [0, 1] (the paper uses 0.08 on SD2)."""

    def __init__(
        self, guidance_rate: float = 0.08, num_steps: int = 500, eta: float = 1.0, schedule: Schedule | None = None
    ) -> None:
        super().__init__(num_steps, eta, schedule)
        if not 0 <= guidance_rate <= 1:
            raise ValueError(f"guidance_rate must lie in [0, 1], got {guidance_rate}")
        if eta == 0:
            raise ValueError("DSG steps onto the sphere of the stochastic step; eta = 0 (DDIM) has none")
        self.guidance_rate = guidance_rate

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        return dsg(u, sigma, sigma_next, ctx.denoise, ctx.residual, ctx.noise(), self.guidance_rate, ctx.eta)
