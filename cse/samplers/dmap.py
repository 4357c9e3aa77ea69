"""DMAP: the paper's explicit MAP step (Xu et al., ICLR 2025, Algorithm 2)."""

from __future__ import annotations

import torch
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
    project_to_sphere,
    scaled_step,
    sphere_radius,
)


def dmap(
    u: Tensor,
    sigma: float,
    sigma_next: float,
    denoise: Denoiser,
    residual: Residual,
    noise: Tensor,
    zeta: float,
    ascent_steps: int,
    eta: float = 1.0,
) -> tuple[Tensor, dict]:
    """Maximise ``p(y | u_next)`` over the sphere where ``p(u_next | u)`` concentrates.

    The candidate ``mu + sigma_up n`` takes K steps ``u <- u - zeta grad ||A(D(u, sigma_next)) - y||``,
    each followed by projection onto the sphere of radius ``sqrt(n) sigma_up`` around ``mu``.
    """
    with torch.no_grad():
        x0_hat = denoise(u, sigma)
    mu, sigma_up = ancestral_step(u, x0_hat, sigma, sigma_next, eta)
    radius = sphere_radius(sigma_up, u)
    report = {"x0_hat": x0_hat, "mu": mu, "radius": radius, "candidates": []}
    if radius == 0:  # the last step lands on x0_hat: nothing left to maximise over
        return mu, report
    candidate = mu + sigma_up * noise
    for _ in range(ascent_steps):
        grad, _, report["residual"] = measurement_grad(candidate, sigma_next, denoise, residual)
        candidate = project_to_sphere(candidate - zeta * grad, mu, radius)
        report["candidates"].append(candidate)
    return candidate, report


class DMAP(Sampler):
    """DMAP with K = ``ascent_steps`` refinements per diffusion step.

    "DMAP (full)": K = 3 at the full step count. "DMAP (same)": K = 2 with half the steps and
    twice ``zeta``: as many gradient evaluations as DPS. ``step_scaling`` as ``DPS``'s.
    """

    def __init__(
        self,
        zeta: float = 1.0,
        num_steps: int = 500,
        ascent_steps: int = 3,
        eta: float = 1.0,
        schedule: Schedule | None = None,
        step_scaling: StepScaling = "constant",
    ) -> None:
        super().__init__(num_steps, eta, schedule)
        if ascent_steps < 1:
            raise ValueError(f"ascent_steps must be >= 1, got {ascent_steps}")
        if eta == 0:
            raise ValueError("DMAP maximises over the sphere of the stochastic step; eta = 0 (DDIM) has none")
        self.zeta, self.ascent_steps = check_step_size("zeta", zeta), ascent_steps
        self.step_scaling = check_step_scaling(step_scaling)

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        zeta = scaled_step(self.zeta, sigma, sigma_next, self.step_scaling)
        return dmap(u, sigma, sigma_next, ctx.denoise, ctx.residual, ctx.noise(), zeta, self.ascent_steps, ctx.eta)
