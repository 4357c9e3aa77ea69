"""Observations I-III and the exact-posterior benchmark's scores, against closed-form values."""

import pytest
import torch

from cse.analysis.exact import (
    diversity_ratios,
    energy_distance,
    mode_log_odds,
    mode_weights,
    posterior_map,
    random_problem,
    toy_problem,
)
from cse.analysis.scores import implied_dps_score, score, score_errors, score_means
from cse.operators import MatrixOperator
from cse.priors import GaussianMixturePrior
from cse.samplers.common import ancestral_step, measurement_residual
from cse.samplers.dps import dps
from cse.seeding import PerSampleNoise

pytestmark = pytest.mark.usefixtures("float64_default")


def test_the_exact_conditional_score_has_no_error_against_itself():
    problem = toy_problem("noisy")
    posterior = problem.posterior(16)
    y = problem.y.expand(16, -1)
    residual = measurement_residual(problem.prior, problem.operator, y)
    sigmas = problem.schedule.sigmas(20).tolist()
    noise = PerSampleNoise(range(16), (2,), like=y)
    curves = score_errors(posterior.denoise, posterior.denoise, residual, sigmas, noise, [0.0, 0.5])
    assert curves["uncond"].abs().max() == 0 and curves["dps_0"].abs().max() == 0
    assert curves["dps_0.5"].min() > 0 and curves["reference_norm"].min() > 0


def test_the_implied_dps_score_makes_the_dps_step():
    """Proposition 1 in VE form: the ancestral step taken with s_DPS is DPS's step."""
    problem = toy_problem("noisy")
    g = torch.Generator().manual_seed(0)
    sigma, sigma_next, zeta = 1.5, 0.9, 0.7
    u, n = sigma * torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    y = problem.y.expand(4, -1)
    residual = measurement_residual(problem.prior, problem.operator, y)
    step, report = dps(u, sigma, sigma_next, problem.prior.denoise, residual, n, zeta)
    uu = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(residual(problem.prior.denoise(uu, sigma)).sum(), uu)
    implied = implied_dps_score(score(report["x0_hat"], u, sigma), grad, zeta, sigma, sigma_next)
    mean, sigma_up = ancestral_step(u, u + sigma**2 * implied, sigma, sigma_next)
    torch.testing.assert_close(mean + sigma_up * n, step)


def test_the_score_mean_of_a_gaussian_at_x_T_is_the_formula():
    """For N(m, c^2 I) the score at noise sigma is (m - u) / (c^2 + sigma^2); over u ~ N(0, sigma_T^2 I)
    its mean is m / (c^2 + sigma_T^2)."""
    m = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    prior = GaussianMixturePrior(m, std=0.5)
    A = MatrixOperator(torch.eye(4)[:2])
    n, sigma_T = 20_000, 14.6
    u = sigma_T * torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(n, 2)
    result = score_means(prior.denoise, prior.denoise, measurement_residual(prior, A, y), sigma_T, 10.0, u, [1.0])
    expected = float((m / (0.25 + sigma_T**2)).abs().mean())
    assert result["uncond"]["abs_mean"] == pytest.approx(expected, abs=4 * result["uncond"]["floor"])
    assert result["uncond"]["floor"] < 0.1 * expected


def test_exact_scores_of_exact_samples():
    problem = random_problem(dim=16, measurements=4, components=3, seed=1)
    post = problem.single_posterior()
    a, b = (post.sample(1500, torch.Generator().manual_seed(s)) for s in (1, 2))
    assert abs(energy_distance(a, b)) < 0.02 and energy_distance(a, b + 0.5) > 0.1
    torch.testing.assert_close(mode_weights(post, a), post.weights, atol=0.04, rtol=0)
    ratios = diversity_ratios(post, problem.operator.A, a)
    assert ratios["measured_ratio"] == pytest.approx(1, abs=0.06) and ratios["unmeasured_ratio"] == pytest.approx(
        1, abs=0.06
    )


def test_the_toy_example_as_the_paper_states_it():
    """Centres (-1, -1) and (+1, +1), std 0.3, x_1 measured at 0.5 without noise: the posterior's
    second mode has log-odds -(1.5^2 - 0.5^2) / (2 * 0.3^2) = -100/9, and its MAP is (0.5, 1)."""
    problem = toy_problem("paper")
    assert mode_log_odds(problem) == pytest.approx(-100 / 9)
    torch.testing.assert_close(posterior_map(problem.single_posterior()), torch.tensor([0.5, 1.0]), atol=1e-3, rtol=0)
    assert problem.schedule.sigmas(100)[0] == pytest.approx(4.0) and problem.num_steps == 100
    assert mode_log_odds(toy_problem("zero")) == pytest.approx(0)
