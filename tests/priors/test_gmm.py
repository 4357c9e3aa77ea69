"""The exact tier against closed forms and brute-force quadrature."""

import math

import pytest
import torch

from cse.priors import GaussianMixturePrior

pytestmark = pytest.mark.usefixtures("float64_default")


def random_spd(dim: int, generator: torch.Generator) -> torch.Tensor:
    m = torch.randn(dim, dim, generator=generator)
    return m @ m.T / dim + 0.1 * torch.eye(dim)


@pytest.fixture
def mixture() -> GaussianMixturePrior:
    g = torch.Generator().manual_seed(1)
    means = torch.randn(3, 4, generator=g)
    covs = torch.stack([random_spd(4, g) for _ in range(3)])
    return GaussianMixturePrior(means, covs=covs, weights=torch.tensor([0.2, 0.3, 0.5]))


def test_single_gaussian_denoiser_is_the_wiener_filter():
    prior = GaussianMixturePrior(torch.tensor([[0.5, -1.0]]), std=0.7)
    u = torch.randn(5, 2)
    expected = torch.tensor([0.5, -1.0]) + 0.49 / (0.49 + 4.0) * (u - torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(prior.denoise(u, 2.0), expected)


def test_denoiser_is_tweedie_of_the_marginal(mixture):
    """``E[x0 | u] = u + sigma^2 grad log p_sigma(u)``, with the gradient from autograd of log_prob."""
    u = torch.randn(6, 4, requires_grad=True)
    sigma = 0.8
    (grad,) = torch.autograd.grad(mixture.log_prob(u, sigma).sum(), u)
    torch.testing.assert_close(mixture.denoise(u.detach(), sigma), u.detach() + sigma**2 * grad)
    torch.testing.assert_close(mixture.score(u.detach(), sigma), grad)


def test_denoiser_matches_quadrature_in_1d():
    prior = GaussianMixturePrior(torch.tensor([[-1.0], [1.5]]), std=0.4, weights=torch.tensor([0.7, 0.3]))
    grid = torch.linspace(-6, 6, 20001)
    density = 0.7 * torch.exp(-0.5 * ((grid + 1) / 0.4) ** 2) + 0.3 * torch.exp(-0.5 * ((grid - 1.5) / 0.4) ** 2)
    for u, sigma in [(0.2, 0.5), (-2.0, 1.3), (3.0, 0.1)]:
        likelihood = torch.exp(-0.5 * ((u - grid) / sigma) ** 2)
        expected = (grid * density * likelihood).sum() / (density * likelihood).sum()
        assert prior.denoise(torch.tensor([[u]]), sigma).item() == pytest.approx(expected.item(), abs=1e-6)


def test_denoiser_accepts_image_shaped_data_and_per_sample_sigma():
    prior = GaussianMixturePrior(torch.randn(2, 12), std=0.5)
    u = torch.randn(3, 3, 2, 2)
    sigma = torch.tensor([0.1, 1.0, 5.0])
    out = prior.denoise(u, sigma)
    assert out.shape == u.shape
    for i in range(3):
        torch.testing.assert_close(out[i : i + 1], prior.denoise(u[i : i + 1], sigma[i].item()))


def test_sample_moments(mixture):
    x = mixture.sample(200_000, torch.Generator().manual_seed(0))
    mean = (mixture.weights[:, None] * mixture.means).sum(0)
    second = sum(
        w * (c + m[:, None] * m[None, :]) for w, m, c in zip(mixture.weights, mixture.means, mixture.covs, strict=True)
    )
    torch.testing.assert_close(x.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(x.T @ x / len(x), second, atol=0.03, rtol=0)


def test_posterior_of_a_gaussian_matches_the_information_form():
    g = torch.Generator().manual_seed(2)
    cov = random_spd(5, g)
    prior = GaussianMixturePrior(torch.randn(1, 5, generator=g), covs=cov[None])
    A, y, s = torch.randn(3, 5, generator=g), torch.randn(2, 3, generator=g), 0.3
    post = prior.posterior(A, y, s)
    precision = torch.linalg.inv(cov) + A.T @ A / s**2
    expected_cov = torch.linalg.inv(precision)
    expected_mean = (expected_cov @ ((torch.linalg.inv(cov) @ prior.means[0])[:, None] + A.T @ y.T / s**2)).T
    torch.testing.assert_close(post.covs[0], expected_cov)
    torch.testing.assert_close(post.means[:, 0], expected_mean)
    assert post.batch_size == 2


def test_posterior_of_a_mixture_matches_quadrature_in_1d():
    prior = GaussianMixturePrior(torch.tensor([[-1.0], [1.5]]), std=0.4, weights=torch.tensor([0.7, 0.3]))
    post = prior.posterior(torch.tensor([[2.0]]), torch.tensor([[1.1]]), noise_std=0.8)
    grid = torch.linspace(-6, 6, 20001)
    density = 0.7 * torch.exp(-0.5 * ((grid + 1) / 0.4) ** 2) + 0.3 * torch.exp(-0.5 * ((grid - 1.5) / 0.4) ** 2)
    density = density * torch.exp(-0.5 * ((1.1 - 2.0 * grid) / 0.8) ** 2)
    density /= density.sum()
    mean = (grid * density).sum()
    var = ((grid - mean) ** 2 * density).sum()
    post_mean = (post.weights[0] * post.means[0, :, 0]).sum()
    post_var = (post.weights[0] * (post.covs[:, 0, 0] + post.means[0, :, 0] ** 2)).sum() - post_mean**2
    assert post_mean.item() == pytest.approx(mean.item(), abs=1e-6)
    assert post_var.item() == pytest.approx(var.item(), abs=1e-6)


def test_posterior_denoiser_is_the_exact_conditional_denoiser(mixture):
    """E[x0 | u, y] by Bayes on the joint of (x0, u, y): compare with denoising under p(x0 | y)."""
    A, s = torch.randn(2, 4), 0.5
    y = torch.randn(1, 2)
    post = mixture.posterior(A, y, s)
    u = torch.randn(1, 4)
    sigma = 0.9
    # The joint posterior given (u, y) is the posterior of the stacked measurement [I; A] x0.
    stacked = mixture.posterior(torch.cat([torch.eye(4) / sigma, A / s]), torch.cat([u / sigma, y / s], 1), 1.0)
    expected = (stacked.weights[0, :, None] * stacked.means[0]).sum(0)
    torch.testing.assert_close(post.denoise(u, sigma)[0], expected)


def test_clear_errors():
    with pytest.raises(ValueError, match="exactly one"):
        GaussianMixturePrior(torch.zeros(2, 3))
    prior = GaussianMixturePrior(torch.zeros(2, 3), std=1.0)
    with pytest.raises(ValueError, match="3 values"):
        prior.denoise(torch.zeros(4, 2), 1.0)
    assert not prior.has_cse and prior.conditioned(torch.zeros(4, 3)) is prior  # no CSE: nothing to bind
    batched = prior.posterior(torch.eye(3), torch.zeros(2, 3), 0.1)
    with pytest.raises(ValueError, match="batch of 2 mixtures denoises as many samples, got 3"):
        batched.denoise(torch.zeros(3, 3), 1.0)
    assert math.isfinite(batched.log_prob(torch.zeros(2, 3), 1.0).sum().item())
