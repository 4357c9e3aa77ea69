"""Samplers against ground truth on the exact (Gaussian-mixture) tier."""

from itertools import pairwise

import pytest
import torch

from cse.priors import DiscreteSchedule, GaussianMixturePrior
from cse.samplers import DMAP, DPS, DSG, Ancestral
from cse.samplers.common import ancestral_step, per_sample_norm

pytestmark = pytest.mark.usefixtures("float64_default")
SCHEDULE = DiscreteSchedule.scaled_linear()


def random_spd(dim, eigenvalues, generator):
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
    return q @ torch.diag(eigenvalues) @ q.T


def whitened_error(sample_cov, cov):
    """Max entry of ``P^-1/2 S P^-1/2 - I``; each entry has Monte-Carlo std about 1/sqrt(n)."""
    evals, evecs = torch.linalg.eigh(cov)
    w = evecs @ torch.diag(evals**-0.5) @ evecs.T
    return (w @ sample_cov @ w - torch.eye(len(cov))).abs().max().item()


def mixture_moments(prior):
    w, m, c = prior.weights.reshape(-1), prior.means.reshape(-1, prior.dim), prior.covs
    mean = (w[:, None] * m).sum(0)
    cov = sum(wk * (ck + torch.outer(mk - mean, mk - mean)) for wk, mk, ck in zip(w, m, c, strict=True))
    return mean, cov


def bimodal_2d():
    g = torch.Generator().manual_seed(3)
    covs = torch.stack([random_spd(2, torch.tensor([0.5, 1.0]), g), random_spd(2, torch.tensor([0.6, 0.9]), g)])
    return GaussianMixturePrior(torch.tensor([[-2.5, 0.0], [2.5, 1.0]]), covs=covs, weights=torch.tensor([0.3, 0.7]))


# -- the unguided sampler reproduces priors and posteriors ---------------------------------------


def euler_ancestral_chain(eigenvalue: float, num_steps: int) -> tuple[float, float]:
    """Exact output of the chain on N(m, eigenvalue) along one eigen-direction, started at 0:
    ``e_next = c e + sigma_up n`` for ``e = u - m``, with ``c = k + (sigma_down / sigma)(1 - k)``,
    ``k = eigenvalue / (eigenvalue + sigma^2)``. Returns (factor on -m of the mean, variance)."""
    sigmas = SCHEDULE.sigmas(num_steps).tolist()
    mean_factor, var = 1.0, sigmas[0] ** 2
    for sigma, sigma_next in pairwise(sigmas):
        k = eigenvalue / (eigenvalue + sigma**2)
        _, sigma_up = ancestral_step(torch.zeros(1), torch.zeros(1), sigma, sigma_next)
        c = k + ((sigma_next**2 - sigma_up**2) ** 0.5 / sigma) * (1 - k)
        mean_factor, var = c * mean_factor, c**2 * var + sigma_up**2
    return mean_factor, var


def test_ancestral_is_the_exact_euler_ancestral_chain_on_a_16d_gaussian():
    """At 100 steps the discrete chain under-disperses (DDPM's fixed variance ignores Var[x0 | u]);
    its exact output law is computable, and the sampler must match it to Monte-Carlo error."""
    g = torch.Generator().manual_seed(0)
    eigenvalues = torch.logspace(-1.3, 0.5, 16)
    cov = random_spd(16, eigenvalues, g)
    mean = torch.randn(16, generator=g)
    prior = GaussianMixturePrior(mean[None], covs=cov[None], schedule=SCHEDULE)
    n = 20_000
    x = Ancestral(100)(prior, None, None, seeds=range(n))
    evals, evecs = torch.linalg.eigh(cov)
    chain = [euler_ancestral_chain(lam.item(), 100) for lam in evals]
    factors, variances = torch.tensor([c[0] for c in chain]), torch.tensor([c[1] for c in chain])
    expected_mean = mean - evecs @ (factors * (evecs.T @ mean))
    expected_cov = evecs @ torch.diag(variances) @ evecs.T
    assert (variances / evals).min() < 0.85  # the discretisation bias is real at 100 steps ...
    assert whitened_error(torch.cov(x.T), expected_cov) < 5 / n**0.5 * 2**0.5  # ... and exactly reproduced
    assert ((x.mean(0) - expected_mean) / variances.sqrt().max()).abs().max() < 5 / n**0.5


def test_ancestral_reproduces_a_bimodal_prior():
    prior = bimodal_2d()
    n = 8000
    x = Ancestral(1000)(prior, None, None, seeds=range(n))
    mean, cov = mixture_moments(prior)
    modes = prior.responsibilities(x, 1e-3).argmax(1)
    weight_of_second = (modes == 1).double().mean().item()
    assert weight_of_second == pytest.approx(0.7, abs=4 * (0.21 / n) ** 0.5)
    for k in range(2):
        xk = x[modes == k]
        assert whitened_error(torch.cov(xk.T), prior.covs[k]) < 0.12  # 4 MC std + 1000-step bias (< 2 %)
        assert (xk.mean(0) - prior.means[k]).abs().max() < 4 / len(xk) ** 0.5
    assert whitened_error(torch.cov(x.T), cov) < 0.12
    assert ((x.mean(0) - mean).abs() < 0.1).all()


def test_ancestral_on_the_exact_posterior_reproduces_it_in_2d_bimodal():
    """The posterior of the exact tier is its perfect CSE: sampling it must give p(x0 | y)."""
    prior = bimodal_2d()
    A, noise_std, n = torch.tensor([[1.0, 0.4]]), 1.5, 8000
    posterior = prior.posterior(A, torch.full((n, 1), 0.5), noise_std)
    assert posterior.weights[0].min() > 0.15  # both modes survive the measurement
    x = Ancestral(1000)(posterior, None, None, seeds=range(n))
    single = GaussianMixturePrior(posterior.means[0], covs=posterior.covs, weights=posterior.weights[0])
    mean, cov = mixture_moments(single)
    assert whitened_error(torch.cov(x.T), cov) < 0.12
    assert ((x.mean(0) - mean).abs() / cov.diagonal().sqrt() < 4 / n**0.5 + 0.02).all()
    share = single.responsibilities(x, 1e-3).argmax(1).double().mean().item()
    assert share == pytest.approx(single.weights[1].item(), abs=0.03)


def test_ancestral_on_the_exact_posterior_reproduces_it_in_16d():
    g = torch.Generator().manual_seed(5)
    covs = torch.stack([random_spd(16, torch.linspace(0.3, 1.5, 16), g) for _ in range(2)])
    prior = GaussianMixturePrior(3 * torch.randn(2, 16, generator=g), covs=covs)
    A, n = torch.randn(6, 16, generator=g) / 4, 8000
    x0 = prior.sample(1, g)
    y = x0 @ A.T + 0.5 * torch.randn(1, 6, generator=g)
    posterior = prior.posterior(A, y.expand(n, -1), 0.5)
    x = Ancestral(1000)(posterior, None, None, seeds=range(n))
    single = GaussianMixturePrior(posterior.means[0], covs=posterior.covs, weights=posterior.weights[0])
    mean, cov = mixture_moments(single)
    assert whitened_error(torch.cov(x.T), cov) < 0.1
    evals, evecs = torch.linalg.eigh(cov)
    assert ((evecs.T @ (x.mean(0) - mean)) / evals.sqrt()).abs().max() < 5 / n**0.5


# -- guided samplers -----------------------------------------------------------------------------


def test_dps_with_zero_step_is_ancestral(problem):
    prior, A, y = problem
    seeds = range(8)
    torch.testing.assert_close(
        DPS(0.0, 30)(prior, A, y[:8], seeds), Ancestral(30)(prior, A, y[:8], seeds), rtol=0, atol=0
    )


def expected_radius(step: dict, numel: int) -> float:
    """``sqrt(n) sigma_up`` with DDPM's ``sigma_up`` from the step's own sigmas."""
    sigma, sigma_next = step["sigma"], step["sigma_next"]
    return numel**0.5 * sigma_next * (1 - sigma_next**2 / sigma**2) ** 0.5


def test_dmap_candidates_lie_on_their_spheres(problem):
    prior, A, y = problem
    seen = []
    DMAP(zeta=0.5, num_steps=20, ascent_steps=3)(prior, A, y[:4], range(4), callback=seen.append)
    refined = [s for s in seen if s["radius"] > 0]
    assert len(refined) == 19 and all(len(s["candidates"]) == 3 for s in refined)
    for s in refined:
        for candidate in s["candidates"]:
            torch.testing.assert_close(per_sample_norm(candidate - s["mu"]), torch.full((4,), expected_radius(s, 16)))
    assert seen[-1]["radius"] == 0 and seen[-1]["candidates"] == []


def test_dsg_steps_land_on_their_spheres(problem):
    prior, A, y = problem
    seen = []
    DSG(guidance_rate=0.3, num_steps=20)(prior, A, y[:4], range(4), callback=seen.append)
    for s in seen[:-1]:
        torch.testing.assert_close(per_sample_norm(s["u"] - s["mu"]), torch.full((4,), expected_radius(s, 16)))
    assert seen[-1]["radius"] == 0


def test_dmap_same_costs_as_many_gradients_as_dps(problem):
    prior, A, y = problem

    class Counting(GaussianMixturePrior):
        calls = {"grad": 0, "plain": 0}

        def denoise(self, u, sigma):
            self.calls["grad" if u.requires_grad else "plain"] += 1
            return super().denoise(u, sigma)

    counting = Counting(prior.means, std=0.5)
    DPS(zeta=0.5, num_steps=40)(counting, A, y[:2], range(2))
    dps_grads = counting.calls["grad"]
    counting.calls.update(grad=0, plain=0)
    DMAP(zeta=1.0, num_steps=20, ascent_steps=2)(counting, A, y[:2], range(2))
    assert dps_grads == 40 and counting.calls["grad"] == 2 * 19  # the last step has nothing to refine
    assert counting.calls["plain"] == 20


def test_callback_reports_every_step(problem):
    prior, A, y = problem
    seen = []
    DPS(zeta=0.5, num_steps=7)(prior, A, y[:2], range(2), callback=seen.append)
    assert [s["step"] for s in seen] == list(range(7))
    assert seen[-1]["sigma_next"] == 0 and {"u", "x0_hat", "residual", "sigma"} <= set(seen[0])


def test_unconditional_sampling_with_a_shape_override():
    prior = GaussianMixturePrior(torch.zeros(1, 12), std=1.0)
    assert Ancestral(5)(prior, None, None, seeds=[0, 1], shape=(3, 2, 2)).shape == (2, 3, 2, 2)


# -- bad input -----------------------------------------------------------------------------------


def test_seeds_must_match_the_batch(problem):
    prior, A, y = problem
    with pytest.raises(ValueError, match="one seed per measurement"):
        DPS(0.5, 3)(prior, A, y[:3], seeds=[0, 1])


@pytest.mark.parametrize("bad", [dict(num_steps=0), dict(ascent_steps=0)])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValueError):
        DMAP(**bad)
