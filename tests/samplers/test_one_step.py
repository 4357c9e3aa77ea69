"""One step of each guided sampler against a hand transcription of its published update rule.

The transcriptions are written independently of ``cse.samplers``: the Euler-ancestral step as
diffusers' ``EulerAncestralDiscreteScheduler.step`` computes it (derivative, dt, sigma_up), which
is the paper's reference runs' solver, and the guidance as the papers state it:
- DPS (Chung et al. 2023, Alg. 1; the paper's eq. 4): subtract zeta times the gradient, at the
  current state u_t, of the non-squared residual of the Tweedie estimate D(u_t, sigma_t);
- DMAP (Xu et al. 2025, Alg. 2): from the ancestral candidate, K times: step against the gradient
  of the residual of D(candidate, sigma_next), then project onto the sphere of radius
  sqrt(n) sigma_up around the ancestral mean;
- DSG (Yang et al. 2024, Alg. 1): mix the random direction with the steepest-descent direction
  scaled to the sphere, and step onto the sphere.
A gradient taken at the wrong state, or a denoiser called at the wrong noise level, changes the
result, because the Gaussian-mixture denoiser depends strongly on both.
"""

import math

import pytest
import torch

from cse.operators import MatrixOperator
from cse.priors import GaussianMixturePrior
from cse.samplers.dmap import dmap
from cse.samplers.dps import dps
from cse.samplers.dsg import dsg

pytestmark = pytest.mark.usefixtures("float64_default")


@pytest.fixture(scope="module")
def setting():
    g = torch.Generator().manual_seed(11)
    prior = GaussianMixturePrior(1.5 * torch.randn(3, 8, generator=g), std=0.4)
    A = MatrixOperator(torch.randn(3, 8, generator=g) / 2)
    y = A(prior.sample(3, g)) + 0.05 * torch.randn(3, 3, generator=g)
    return prior, A, y, g


def euler_ancestral(u, x0, sigma, sigma_next, z):
    """diffusers' EulerAncestralDiscreteScheduler.step, sample by sample."""
    sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    derivative = (u - x0) / sigma
    mean = u + derivative * (sigma_down - sigma)
    return mean + sigma_up * z, mean, sigma_up


def residual_gradient(prior, A, y, u, sigma):
    """grad_u ||y - A D(u, sigma)|| for one sample ``u`` [D], and D(u, sigma)."""
    u = u.clone().requires_grad_(True)
    x0 = prior.denoise(u[None], sigma)[0]
    (torch.linalg.vector_norm(y - A.A @ x0)).backward()
    return u.grad, x0.detach()


STEPS = [(8.0, 5.0), (2.0, 1.2), (0.6, 0.3)]


@pytest.mark.parametrize("sigma, sigma_next", STEPS)
def test_dps_step(setting, sigma, sigma_next):
    prior, A, y, g = setting
    zeta = 0.7
    u, z = sigma * torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    ours, _ = dps(u, sigma, sigma_next, lambda v, s: prior.denoise(v, s), residual(prior, A, y), z, zeta)
    for i in range(3):
        grad, x0 = residual_gradient(prior, A, y[i], u[i], sigma)
        expected = euler_ancestral(u[i], x0, sigma, sigma_next, z[i])[0] - zeta * grad
        torch.testing.assert_close(ours[i], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sigma, sigma_next", STEPS)
@pytest.mark.parametrize("ascent_steps", [1, 3])
def test_dmap_step(setting, sigma, sigma_next, ascent_steps):
    prior, A, y, g = setting
    zeta = 0.4
    u, z = sigma * torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    ours, report = dmap(
        u, sigma, sigma_next, lambda v, s: prior.denoise(v, s), residual(prior, A, y), z, zeta, ascent_steps
    )
    for i in range(3):
        x0 = prior.denoise(u[i][None], sigma)[0]
        candidate, mean, sigma_up = euler_ancestral(u[i], x0, sigma, sigma_next, z[i])
        radius = math.sqrt(8) * sigma_up
        for _ in range(ascent_steps):
            grad, _ = residual_gradient(prior, A, y[i], candidate, sigma_next)  # at the candidate, at sigma_next
            moved = candidate - zeta * grad
            candidate = mean + radius * (moved - mean) / torch.linalg.vector_norm(moved - mean)
        torch.testing.assert_close(ours[i], candidate, rtol=1e-10, atol=1e-10)
    assert len(report["candidates"]) == ascent_steps


@pytest.mark.parametrize("sigma, sigma_next", STEPS)
@pytest.mark.parametrize("rate", [0.0, 0.08, 1.0])
def test_dsg_step(setting, sigma, sigma_next, rate):
    prior, A, y, g = setting
    u, z = sigma * torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    ours, _ = dsg(u, sigma, sigma_next, lambda v, s: prior.denoise(v, s), residual(prior, A, y), z, rate)
    for i in range(3):
        grad, x0 = residual_gradient(prior, A, y[i], u[i], sigma)
        _, mean, sigma_up = euler_ancestral(u[i], x0, sigma, sigma_next, z[i])
        radius = math.sqrt(8) * sigma_up
        steepest = -radius * grad / torch.linalg.vector_norm(grad)
        random = sigma_up * z[i]
        mixed = random + rate * (steepest - random)
        expected = mean + radius * mixed / torch.linalg.vector_norm(mixed)
        torch.testing.assert_close(ours[i], expected, rtol=1e-10, atol=1e-10)


def residual(prior, A, y):
    return lambda x0: torch.linalg.vector_norm(A(prior.decode(x0)) - y, dim=1)
