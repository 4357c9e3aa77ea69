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


# -- the baselines and the solver/schedule choices ------------------------------------------------


class Stream:
    """A context's noise: the given tensors, in order."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def __call__(self):
        return self.draws.pop(0)


def context(prior, A, y, noise, index=0, num_steps=500, eta=1.0):
    from cse.samplers.common import SamplingContext

    return SamplingContext(
        denoise=lambda v, s: prior.denoise(v, s),
        residual=residual(prior, A, y),
        noise=noise,
        prior=prior,
        operator=A,
        y=y,
        eta=eta,
        index=index,
        num_steps=num_steps,
    )


@pytest.mark.parametrize("sigma, sigma_next", STEPS)
def test_psld_step(setting, sigma, sigma_next):
    """Rout et al., eq. 35: the DPS step on ||A D(z0) - y|| + gamma ||z0 - E(A^T y + D(z0) - A^T A D(z0))||,
    the gradient taken at u_t through the Tweedie estimate at sigma_t (E = D = identity here)."""
    from cse.samplers import PSLD

    prior, A, y, g = setting
    zeta, gamma = 0.7, 0.3
    u, z = sigma * torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    unused = torch.randn(3, 8, generator=g)  # the encoder's draw (a pixel prior's encoder ignores it)
    ours, _ = PSLD(zeta, gamma).step(u, sigma, sigma_next, context(prior, A, y, Stream(unused, z)))
    for i in range(3):
        v = u[i].clone().requires_grad_(True)
        x0 = prior.denoise(v[None], sigma)[0]
        glued = A.A.T @ y[i] + x0 - A.A.T @ (A.A @ x0)
        loss = torch.linalg.vector_norm(A.A @ x0 - y[i]) + gamma * torch.linalg.vector_norm(x0 - glued)
        loss.backward()
        expected = euler_ancestral(u[i], x0.detach(), sigma, sigma_next, z[i])[0] - zeta * v.grad
        torch.testing.assert_close(ours[i], expected, rtol=1e-10, atol=1e-10)


def test_freedom_step_travels_back_in_time_inside_its_window(setting):
    """Yu et al. / the paper's eq. 36: inside the window, u' = DPS(u); u'' = u' + sqrt(s^2 - s'^2) n;
    the step returns DPS(u''); outside the window it is one DPS step."""
    from cse.samplers import FreeDoM

    prior, A, y, g = setting
    sigma, sigma_next, zeta = 2.0, 1.2, 0.7
    u = sigma * torch.randn(3, 8, generator=g)
    z1, back, z2 = (torch.randn(3, 8, generator=g) for _ in range(3))
    sampler = FreeDoM(zeta, num_steps=500, repeats=2, travel=(0.05, 0.1))
    assert [sampler.travels(i) for i in (24, 25, 50, 51)] == [False, True, True, False]
    ours, report = sampler.step(u, sigma, sigma_next, context(prior, A, y, Stream(z1, back, z2), index=30))
    denoise, res = (lambda v, s: prior.denoise(v, s)), residual(prior, A, y)
    first, _ = dps(u, sigma, sigma_next, denoise, res, z1, zeta)
    renoised = first + (sigma**2 - sigma_next**2) ** 0.5 * back
    expected, _ = dps(renoised, sigma, sigma_next, denoise, res, z2, zeta)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    assert report["passes"] == 2
    outside, _ = sampler.step(u, sigma, sigma_next, context(prior, A, y, Stream(z1), index=60))
    torch.testing.assert_close(outside, first, rtol=0, atol=0)


def test_resample_resampling_is_the_papers_vp_formula_in_ve_form():
    """Eqs. 38-39 in VP form with abar = 1 / (1 + sigma^2): gamma = 40 (1 - ab') / (1 - ab) (1 - ab / ab'),
    z ~ N((gamma sqrt(ab') z0 + (1 - ab') z') / (gamma + 1 - ab'), gamma (1 - ab') / (gamma + 1 - ab')),
    with z' = sqrt(ab') u' the DPS step; back to VE, u = z / sqrt(ab')."""
    from cse.samplers.resample import stochastic_resample

    g = torch.Generator().manual_seed(2)
    z0, u_next, n = (torch.randn(2, 8, generator=g) for _ in range(3))
    for sigma, sigma_next in [(8.0, 5.0), (0.9, 0.4)]:
        ab, ab_prev = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        gamma = 40 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        z_prime = ab_prev**0.5 * u_next
        mean = (gamma * ab_prev**0.5 * z0 + (1 - ab_prev) * z_prime) / (gamma + 1 - ab_prev)
        z = mean + (gamma * (1 - ab_prev) / (gamma + 1 - ab_prev)) ** 0.5 * n
        torch.testing.assert_close(stochastic_resample(z0, u_next, sigma, sigma_next, n), z / ab_prev**0.5)


def test_resample_step_optimises_the_tweedie_estimate_then_resamples(setting):
    """At a consistency step: the DPS step, then z0 = argmin ||A z - y||^2 from the Tweedie estimate
    of u_t (here, a linear problem the optimiser solves), then the resampling of eqs. 38-39."""
    from cse.samplers import ReSample
    from cse.samplers.resample import stochastic_resample

    prior, A, y, g = setting
    sigma, sigma_next, zeta = 2.0, 1.2, 0.7
    u = sigma * torch.randn(3, 8, generator=g)
    z1, n = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    sampler = ReSample(zeta, num_steps=500, lr=0.05, max_iters=300)
    assert [sampler.consistency_step(i) for i in (0, 50, 75, 100, 150)] == [False, True, False, True, False]
    ours, report = sampler.step(u, sigma, sigma_next, context(prior, A, y, Stream(z1, n), index=50))
    u_dps, dps_report = dps(u, sigma, sigma_next, lambda v, s: prior.denoise(v, s), residual(prior, A, y), z1, zeta)
    z0 = dps_report["x0_hat"].clone().requires_grad_(True)  # eq. 37 by hand: AdamW from the Tweedie estimate
    optimiser = torch.optim.AdamW([z0], lr=0.05)
    for _ in range(300):
        error = (A(z0) - y).square().mean(1)
        done = error.detach() < 1e-6  # a sample that fits stays where it is
        if done.all():
            break
        optimiser.zero_grad()
        error.sum().backward()
        before = z0.detach().clone()
        optimiser.step()
        with torch.no_grad():
            z0[done] = before[done]
    z0 = z0.detach()
    torch.testing.assert_close(report["consistent_x0"], z0)
    fit, start = (A(z0) - y).square().mean(1), (A(dps_report["x0_hat"]) - y).square().mean(1)
    assert (fit < 0.01 * start).all()  # the hard data consistency holds
    torch.testing.assert_close(ours, stochastic_resample(z0, u_dps, sigma, sigma_next, n), rtol=0, atol=0)


def test_ddim_step_is_the_vp_ddim_update():
    """eta = 0: x_prev = sqrt(ab') x0 + sqrt(1 - ab') eps_hat with eps_hat = (x_t - sqrt(ab) x0) / sqrt(1 - ab)
    (Song et al. 2021, eq. 12, sigma_t = 0), in VE form u = x / sqrt(ab)."""
    from cse.samplers.common import ancestral_step

    g = torch.Generator().manual_seed(3)
    u, x0 = 3 * torch.randn(2, 8, generator=g), torch.randn(2, 8, generator=g)
    sigma, sigma_next = 3.0, 1.5
    ab, ab_prev = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
    x_t = ab**0.5 * u
    eps = (x_t - ab**0.5 * x0) / (1 - ab) ** 0.5
    x_prev = ab_prev**0.5 * x0 + (1 - ab_prev) ** 0.5 * eps
    mean, sigma_up = ancestral_step(u, x0, sigma, sigma_next, eta=0.0)
    assert sigma_up == 0
    torch.testing.assert_close(mean, x_prev / ab_prev**0.5)


def test_karras_sigmas():
    """Karras et al. 2022, eq. 5: (s_max^(1/rho) + i / (N - 1) (s_min^(1/rho) - s_max^(1/rho)))^rho, then 0."""
    from cse.priors import KarrasSchedule

    sigmas = KarrasSchedule(sigma_min=0.002, sigma_max=4.0, rho=7.0).sigmas(100)
    i = torch.arange(100, dtype=torch.float64)
    expected = (4.0 ** (1 / 7) + i / 99 * (0.002 ** (1 / 7) - 4.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(sigmas[:-1], expected)
    assert sigmas[-1] == 0 and sigmas[0] == pytest.approx(4.0) and (sigmas[1:] < sigmas[:-1]).all()


def test_noise_level_step_scaling_is_the_implied_likelihood_weight(setting):
    """DPS(step_scaling="noise_level") takes zeta (sigma^2 - sigma_next^2): the same step as the
    constant-step DPS at that zeta; by Proposition 1 its implied likelihood weight is then zeta itself."""
    from cse.samplers import DMAP, DPS
    from cse.samplers.common import scaled_step

    prior, A, y, g = setting
    sigma, sigma_next = 2.0, 1.2
    u, z = sigma * torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    for sampler_class in (DPS, DMAP):
        scaled, _ = sampler_class(0.25, step_scaling="noise_level").step(
            u, sigma, sigma_next, context(prior, A, y, Stream(z))
        )
        constant, _ = sampler_class(0.25 * (sigma**2 - sigma_next**2)).step(
            u, sigma, sigma_next, context(prior, A, y, Stream(z))
        )
        torch.testing.assert_close(scaled, constant, rtol=0, atol=0)
        plain, _ = sampler_class(0.25).step(u, sigma, sigma_next, context(prior, A, y, Stream(z)))
        assert not torch.allclose(plain, scaled)
    assert scaled_step(0.25, sigma, sigma_next, "constant") == 0.25


# -- the spectral methods (cse.operators.svd) -----------------------------------------------------


def spectral(A):
    """The full SVD of the matrix A [M, D] by numpy-free torch: U [M, M], s [D] (zero-padded), V [D, D]."""
    U, s, Vh = torch.linalg.svd(A.A, full_matrices=True)
    return U, torch.cat([s, s.new_zeros(A.A.shape[1] - s.shape[0])]), Vh.T


@pytest.mark.parametrize("sigma, sigma_next", [*STEPS, (0.3, 0.0)])
@pytest.mark.parametrize("sigma_y", [0.0, 0.2])
def test_ddrm_step(setting, sigma, sigma_next, sigma_y):
    """Kawar et al. 2022, eq. 8, coefficient by coefficient in A's SVD (eta 0.85, eta_b 1 and 0.6)."""
    from cse.samplers import DDRM

    prior, A, y, g = setting
    U, s, V = spectral(A)
    for eta_b in (1.0, 0.6):
        eta = 0.85
        u, z = sigma * torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
        ctx = context(prior, A, y, Stream(z))
        ctx.noise_std, ctx.eta = torch.full((3,), sigma_y), eta
        ours, _ = DDRM(eta=eta, eta_b=eta_b).step(u, sigma, sigma_next, ctx)
        for i in range(3):
            x0 = prior.denoise(u[i][None], sigma)[0]
            xb0, xbt, uy = V.T @ x0, V.T @ u[i], U.T @ y[i]
            expected = torch.empty(8)
            for k in range(8):
                if s[k] > 0 and s[k] * sigma_next > sigma_y:
                    spread = math.sqrt(sigma_next**2 - sigma_y**2 * eta_b**2 / s[k] ** 2)
                    expected[k] = (1 - eta_b) * xb0[k] + eta_b * uy[k] / s[k] + spread * z[i, k]
                elif s[k] > 0 and s[k] * sigma_next < sigma_y:
                    pull = math.sqrt(1 - eta**2) * sigma_next * (uy[k] / s[k] - xb0[k]) / (sigma_y / s[k])
                    expected[k] = xb0[k] + pull + eta * sigma_next * z[i, k]
                else:
                    keep = math.sqrt(1 - eta**2) * sigma_next * (xbt[k] - xb0[k]) / sigma
                    expected[k] = xb0[k] + keep + eta * sigma_next * z[i, k]
            torch.testing.assert_close(ours[i], V @ expected, rtol=1e-10, atol=1e-10)


def test_ddrm_starts_around_the_measurement(setting):
    """Eq. 7: x_T's measured coefficients are yb + sqrt(sigma_T^2 - sigma_y^2 / s^2) n, the others sigma_T n."""
    from cse.samplers import DDRM

    prior, A, y, g = setting
    U, s, V = spectral(A)
    z, sigma, sigma_y = torch.randn(3, 8, generator=g), 2.0, 0.3
    ctx = context(prior, A, y, Stream(z))
    ctx.noise_std = torch.full((3,), sigma_y)
    ours = DDRM().initial_state(sigma, ctx)
    for i in range(3):
        uy = U.T @ y[i]
        expected = torch.stack(
            [
                uy[k] / s[k] + math.sqrt(sigma**2 - sigma_y**2 / s[k] ** 2) * z[i, k]
                if s[k] * sigma > sigma_y
                else sigma * z[i, k]
                for k in range(8)
            ]
        )
        torch.testing.assert_close(ours[i], V @ expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sigma, sigma_next", [*STEPS, (0.3, 0.0)])
@pytest.mark.parametrize("sigma_y", [0.0, 0.2])
def test_diffpir_step(setting, sigma, sigma_next, sigma_y):
    """Zhu et al. 2023, Alg. 1: x0 = argmin ||y - A x||^2 + rho ||x - D(u)||^2, rho = lambda sigma_n^2 / sigma^2
    with sigma_n on [0, 1] (half ours, floored at 1e-3, as the official code), then
    u' = x0 + sigma' (sqrt(1 - zeta) (u - x0) / sigma + sqrt(zeta) n); the last step returns D(u)."""
    from cse.samplers import DiffPIR

    prior, A, y, g = setting
    lam, zeta = 3.0, 0.3
    u, z = sigma * torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    ctx = context(prior, A, y, Stream(z))
    ctx.noise_std = torch.full((3,), sigma_y)
    ours, _ = DiffPIR(lambda_=lam, zeta=zeta).step(u, sigma, sigma_next, ctx)
    for i in range(3):
        x0_hat = prior.denoise(u[i][None], sigma)[0]
        if sigma_next == 0:
            torch.testing.assert_close(ours[i], x0_hat, rtol=1e-10, atol=1e-10)
            continue
        rho = lam * max(sigma_y / 2, 1e-3) ** 2 / sigma**2
        x0 = torch.linalg.solve(A.A.T @ A.A + rho * torch.eye(8), A.A.T @ y[i] + rho * x0_hat)
        eps = (u[i] - x0) / sigma
        expected = x0 + sigma_next * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * z[i])
        torch.testing.assert_close(ours[i], expected, rtol=1e-8, atol=1e-8)


def test_diffpir_iterative_prox_approaches_the_closed_form(setting):
    """The iterative proximal step (nonlinear operators, latent priors) converges to the closed form
    (for ||A|| <= 1, where its step 1 / (1 + rho) is stable)."""
    from cse.samplers.diffpir import iterative_prox

    prior, A, y, g = setting
    A = MatrixOperator(A.A / torch.linalg.matrix_norm(A.A, 2))
    x0_hat, rho = torch.randn(3, 8, generator=g), torch.tensor([0.5, 1.0, 2.0])
    ours = iterative_prox(prior, A, y, x0_hat, rho, steps=2000)
    for i in range(3):
        exact = torch.linalg.solve(A.A.T @ A.A + rho[i] * torch.eye(8), A.A.T @ y[i] + rho[i] * x0_hat[i])
        torch.testing.assert_close(ours[i], exact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sigma, sigma_next", STEPS)
@pytest.mark.parametrize("sigma_y", [0.0, 0.2])
def test_pigdm_step(setting, sigma, sigma_next, sigma_y):
    """Song et al. 2023, eqs. 7-8: g = J^T A^T (r^2 A A^T + s_y^2 I)^-1 (y - A D(u)), r^2 = sigma^2 / (1 + sigma^2),
    s_y floored at 1e-3; the ancestral step from D(u) plus zeta r^2 g (the authors' code's weight, in VE form)."""
    from cse.samplers import PiGDM

    prior, A, y, g = setting
    zeta = 0.8
    u, z = sigma * torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    ctx = context(prior, A, y, Stream(z))
    ctx.noise_std = torch.full((3,), sigma_y)
    ours, _ = PiGDM(zeta=zeta).step(u, sigma, sigma_next, ctx)
    r2, sy2 = sigma**2 / (1 + sigma**2), max(sigma_y, 1e-3) ** 2
    for i in range(3):
        v = u[i].clone().requires_grad_(True)
        x0 = prior.denoise(v[None], sigma)[0]
        weight = torch.linalg.solve(r2 * A.A @ A.A.T + sy2 * torch.eye(3), y[i] - A.A @ x0.detach())
        (A.A.T @ weight @ x0).backward()  # x0's Jacobian, transposed, applied to A^T weight
        expected = euler_ancestral(u[i], x0.detach(), sigma, sigma_next, z[i])[0] + zeta * r2 * v.grad
        torch.testing.assert_close(ours[i], expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("sigma, sigma_next", STEPS)
def test_reddiff_steps(setting, sigma, sigma_next):
    """Mardani et al. 2024, Alg. 1, two steps: Adam (betas 0.9, 0.99) on ||y - A mu||^2 / (2 m) +
    lambda sigma sg((x_t - D(x_t)) / sigma - n)^T mu / d, x_t = mu + sigma n (torch.optim.Adam as the reference)."""
    from cse.samplers import REDDiff

    prior, A, y, g = setting
    lam, lr = 0.3, 0.05
    mu0 = torch.randn(3, 8, generator=g)
    n1, n2 = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    ctx = context(prior, A, y, Stream(n1, n2))
    sampler = REDDiff(lambda_=lam, lr=lr)
    first, _ = sampler.step(mu0, sigma, sigma_next, ctx)
    ours, _ = sampler.step(first, sigma_next + 0.1, sigma_next, ctx)
    for i in range(3):
        mu = mu0[i].clone().requires_grad_(True)
        adam = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99))
        for level, n in ((sigma, n1[i]), (sigma_next + 0.1, n2[i])):
            x_t = mu.detach() + level * n
            gap = (x_t - prior.denoise(x_t[None], level)[0]) / level - n
            loss = (y[i] - A.A @ mu).square().mean() / 2 + lam * level * (gap * mu).mean()
            adam.zero_grad()
            loss.backward()
            adam.step()
        torch.testing.assert_close(ours[i], mu.detach(), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("sigma, sigma_next", STEPS)
@pytest.mark.parametrize("ode_steps", [1, 2])
def test_daps_step(setting, sigma, sigma_next, ode_steps):
    """Zhang et al. 2025, Alg. 1: x0_hat by K DDIM steps from sigma to 0; Langevin steps
    x <- x - lr (A^T (A x - y) / tau^2 + (x - x0_hat) / sigma^2) + sqrt(2 lr) n; then x + sigma' n."""
    from cse.samplers import DAPS

    prior, A, y, g = setting
    lr, steps, tau = 2e-3, 3, 0.1
    u = sigma * torch.randn(3, 8, generator=g)
    draws = [torch.randn(3, 8, generator=g) for _ in range(steps + 1)]
    ctx = context(prior, A, y, Stream(*draws), index=5, num_steps=10)
    sampler = DAPS(langevin_lr=lr, langevin_steps=steps, ode_steps=ode_steps, tau=tau, lr_min_ratio=0.2)
    ctx.noise_std = torch.zeros(3)
    ours, _ = sampler.step(u, sigma, sigma_next, ctx)
    step = lr * (1 + 0.5 * (0.2 - 1))  # half-way through the run: half-way to lr_min_ratio
    for i in range(3):
        v = u[i]
        for k in range(ode_steps):
            level, level_next = sigma * (ode_steps - k) / ode_steps, sigma * (ode_steps - k - 1) / ode_steps
            x0_hat = prior.denoise(v[None], level)[0]
            v = x0_hat + (level_next / level) * (v - x0_hat)
        x = x0_hat
        for j in range(steps):
            gradient = A.A.T @ (A.A @ x - y[i]) / tau**2 + (x - x0_hat) / sigma**2
            x = x - step * gradient + math.sqrt(2 * step) * draws[j][i]
        torch.testing.assert_close(ours[i], x + sigma_next * draws[steps][i], rtol=1e-8, atol=1e-8)
