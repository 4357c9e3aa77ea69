"""The exact-posterior benchmark: samplers scored against the closed-form posterior of a Gaussian
mixture (Lightning-free). Every quantity here is computed from exact formulas or from samples of
the exact posterior, so a sampler's error is its own, not a network's.

- :func:`toy_problem`: the paper's Appendix A.4 example, as stated there, and its variants.
- :func:`random_problem`: a higher-dimensional mixture with a random linear operator.
- :func:`energy_distance`, :func:`mode_weights`, :func:`diversity_ratios`, :func:`posterior_map`,
  :func:`log_density`: the scores.
- :func:`grid_posterior`: in 2-D, the posterior under any likelihood, on a grid (the paper's DPS
  assumes ``p(y | x) ~ exp(-zeta ||f(x) - y||)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from cse.operators import MatrixOperator
from cse.priors import GaussianMixturePrior, KarrasSchedule
from cse.priors.schedule import DiscreteSchedule


@dataclass
class ExactProblem:
    """One measurement ``y = A x + noise_std n`` of a mixture prior, and how samplers step through it."""

    name: str
    prior: GaussianMixturePrior
    operator: MatrixOperator
    y: Tensor  # [M]
    noise_std: float
    schedule: KarrasSchedule | DiscreteSchedule
    num_steps: int

    def posterior(self, n: int = 1) -> GaussianMixturePrior:
        """The exact posterior, as a batch of ``n`` identical mixtures (one per sample)."""
        return self.prior.posterior(self.operator.A, self.y.expand(n, -1), self.noise_std)

    def single_posterior(self) -> GaussianMixturePrior:
        post = self.posterior(1)
        return GaussianMixturePrior(
            post.means[0], covs=post.covs, weights=post.weights[0], schedule=self.prior.schedule
        )


def toy_prior() -> GaussianMixturePrior:
    """The prior of the paper's toy example (Appendix A.4), with its Karras schedule."""
    prior = GaussianMixturePrior(torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64), std=0.3)
    prior.schedule = KarrasSchedule(sigma_min=0.002, sigma_max=4.0, rho=7.0)
    return prior


def toy_problem(variant: str = "paper") -> ExactProblem:
    """Appendix A.4: a 2-D mixture of two Gaussians with centres (-1, -1) and (+1, +1), std 0.3,
    equal weights; the first coordinate measured at 0.5 without noise; Karras sigmas (sigma_max 4,
    rho 7), 100 steps. Variants: ``noisy`` (noise std 0.3), ``zero`` (y = 0, where both modes are
    equally likely)."""
    prior = toy_prior()
    y, noise = {"paper": (0.5, 0.0), "noisy": (0.5, 0.3), "zero": (0.0, 0.0)}[variant]
    A = MatrixOperator.from_rows([[1.0, 0.0]])
    return ExactProblem(f"toy-{variant}", prior, A, torch.tensor([y], dtype=torch.float64), noise, prior.schedule, 100)


def random_problem(
    dim: int = 64, measurements: int = 16, components: int = 4, noise_std: float = 0.1, seed: int = 0
) -> ExactProblem:
    """A ``dim``-D mixture of ``components`` equally weighted Gaussians (random covariances with
    eigenvalues 0.05-0.5; means of scale 2 that differ only within a random 4-D subspace) measured
    by a random ``measurements x dim`` operator whose rows are orthogonal to that subspace, so that
    the measurement cannot tell the modes apart and the posterior stays multimodal; SD2's discrete
    schedule, 100 steps; ``y`` measured from a prior sample."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0]
    modes, rest = basis[:, :4], basis[:, 4:]
    means = 2 * torch.randn(components, 4, generator=g, dtype=torch.float64) @ modes.T
    rotations = torch.linalg.qr(torch.randn(components, dim, dim, generator=g, dtype=torch.float64))[0]
    eigen = 0.05 + 0.45 * torch.rand(components, dim, generator=g, dtype=torch.float64)
    covs = rotations @ torch.diag_embed(eigen) @ rotations.mT
    prior = GaussianMixturePrior(means, covs=covs)
    rows = torch.randn(measurements, dim - 4, generator=g, dtype=torch.float64) @ rest.T
    A = MatrixOperator(rows / dim**0.5)
    x = prior.sample(1, g)
    y = (A(x) + noise_std * torch.randn(1, measurements, generator=g, dtype=torch.float64))[0]
    return ExactProblem(f"random-{dim}d", prior, A, y, noise_std, prior.schedule, 100)


# -- scores ---------------------------------------------------------------------------------------


def energy_distance(x: Tensor, y: Tensor) -> float:
    """``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Szekely & Rizzo), with the unbiased within-set means:
    0 in expectation when the two sets come from one distribution, > 0 otherwise."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    n, m = len(x), len(y)
    within_x = torch.cdist(x, x).sum() / (n * (n - 1))
    within_y = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * torch.cdist(x, y).mean() - within_x - within_y)


def mode_weights(posterior: GaussianMixturePrior, samples: Tensor) -> Tensor:
    """Share of samples nearest (by responsibility at a small noise level) to each component."""
    modes = posterior.responsibilities(samples, 1e-3).argmax(1)
    return torch.bincount(modes, minlength=posterior.means.shape[-2]).double() / len(samples)


def mixture_covariance(posterior: GaussianMixturePrior) -> tuple[Tensor, Tensor]:
    """Mean ``[D]`` and covariance ``[D, D]`` of a single mixture."""
    w, m, c = posterior.weights, posterior.means, posterior.covs
    mean = (w[:, None] * m).sum(0)
    centred = m - mean
    return mean, (w[:, None, None] * (c + centred[:, :, None] * centred[:, None, :])).sum(0)


def diversity_ratios(posterior: GaussianMixturePrior, A: Tensor, samples: Tensor) -> dict[str, float]:
    """Sample spread against the posterior's, separately in the measured directions (the row space of
    A) and in the unmeasured ones: ``sqrt(trace P Cov P)`` for the projector P onto each subspace,
    of the samples and of the posterior, and their ratio (1: the right diversity; < 1: too little,
    MAP-like; undefined where a noise-free measurement leaves the posterior no spread)."""
    _, s, vh = torch.linalg.svd(A.double())
    rank = int((s > 1e-10 * s.max()).sum())
    measured, unmeasured = vh[:rank].T, vh[rank:].T
    _, cov = mixture_covariance(posterior)
    sample_cov = torch.cov(samples.flatten(1).double().T)
    out = {}
    for name, basis in (("measured", measured), ("unmeasured", unmeasured)):
        if basis.shape[1] == 0:
            continue
        target = float(torch.trace(basis.T @ cov @ basis).clamp_min(0).sqrt())
        spread = float(torch.trace(basis.T @ sample_cov @ basis).clamp_min(0).sqrt())
        out[f"{name}_std"], out[f"{name}_posterior_std"] = spread, target
        out[f"{name}_ratio"] = spread / target if target > 1e-6 else math.nan  # undefined if noise-free
    return out


def log_density(posterior: GaussianMixturePrior, x: Tensor, smoothing: float = 0.01) -> Tensor:
    """``log p_s(x | y)``, the posterior smoothed by Gaussian noise of std ``smoothing`` (a noise-free
    measurement leaves the posterior no density off its measured plane; smoothing gives it one)."""
    return posterior.log_prob(x, smoothing)


def posterior_map(posterior: GaussianMixturePrior, smoothing: float = 0.01, iterations: int = 500) -> Tensor:
    """The mode of the smoothed posterior: gradient ascent from every component mean, the best kept."""
    x = posterior.means.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = -log_density(posterior, x, smoothing).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return x[log_density(posterior, x, smoothing).argmax()].detach()


def grid_posterior(
    prior: GaussianMixturePrior, log_likelihood: Callable[[Tensor], Tensor], extent: float = 3.0, cells: int = 400
) -> tuple[Tensor, Tensor]:
    """In 2-D: cell centres ``[cells^2, 2]`` and their posterior probabilities under ``log_likelihood``."""
    axis = torch.linspace(-extent, extent, cells, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)
    log_post = prior.log_prob(points, 1e-6) + log_likelihood(points)
    return points, (log_post - log_post.logsumexp(0)).exp()


def sample_grid(points: Tensor, probabilities: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` samples of a grid density: a cell by its probability, then uniform within it."""
    cells = torch.multinomial(probabilities, n, replacement=True, generator=generator)
    step = (points[1, 1] - points[0, 1]).abs()
    jitter = (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5) * step
    return points[cells] + jitter


def mode_log_odds(problem: ExactProblem) -> float:
    """``log w_- - log w_+`` of the exact posterior of the toy (how unlikely its second mode is)."""
    weights = problem.single_posterior().weights
    return float(weights[0].log() - weights[1].log()) if len(weights) == 2 else math.nan
