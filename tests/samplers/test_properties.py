"""Properties every sampler in ``cse.samplers.SAMPLERS`` must have, on the exact (Gaussian-mixture)
tier. The list is read from the package, so a new sampler is covered without editing this file;
each is built with its defaults, the only settings given being a step size (``zeta`` or
``guidance_rate``) where it takes one."""

import inspect

import pytest
import torch

from cse.operators import MatrixOperator
from cse.operators.base import Operator
from cse.priors import KarrasSchedule
from cse.samplers import SAMPLERS, Ancestral
from cse.samplers.common import per_sample_norm

pytestmark = pytest.mark.usefixtures("float64_default")


def build(sampler_class, num_steps=50, **extra):
    accepted = inspect.signature(sampler_class).parameters
    settings = {"zeta": 0.5, "guidance_rate": 0.1}
    return sampler_class(num_steps=num_steps, **{k: v for k, v in settings.items() if k in accepted}, **extra)


GUIDED = [s for s in SAMPLERS if s.guided]


def test_every_sampler_class_in_the_package_is_in_the_list():
    """A sampler defined in any module of ``cse.samplers`` but missing from ``SAMPLERS`` would escape
    every property test below: fail instead."""
    import importlib
    import pkgutil

    import cse.samplers
    from cse.samplers.common import Sampler

    defined = set()
    for info in pkgutil.iter_modules(cse.samplers.__path__):
        module = importlib.import_module(f"cse.samplers.{info.name}")
        defined |= {
            c
            for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, Sampler) and c is not Sampler and c.__module__ == module.__name__
        }
    assert defined == set(SAMPLERS) and len(defined) >= 7


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda c: c.__name__)
def test_a_sample_does_not_depend_on_its_batch(problem, sampler_class):
    prior, A, y = problem
    sampler = build(sampler_class, num_steps=20)
    seeds = [11, 12, 13, 14]
    together = sampler(prior, A, y[:4], seeds)
    alone = torch.cat([sampler(prior, A, y[i : i + 1], [seeds[i]]) for i in range(4)])
    reordered = sampler(prior, A, y[:4].flip(0), seeds[::-1]).flip(0)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-9)
    torch.testing.assert_close(together, reordered, rtol=0, atol=1e-9)


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda c: c.__name__)
def test_seeds_decide_the_sample(problem, sampler_class):
    prior, A, y = problem
    sampler = build(sampler_class, num_steps=10)
    first, again = sampler(prior, A, y[:2], [1, 2]), sampler(prior, A, y[:2], [1, 2])
    other = sampler(prior, A, y[:2], [1, 3])
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])


@pytest.mark.parametrize("sampler_class", GUIDED, ids=lambda c: c.__name__)
def test_guidance_lowers_the_measurement_residual(problem, sampler_class):
    prior, A, y = problem
    seeds = range(len(y))
    unguided = per_sample_norm(A(Ancestral(50)(prior, A, y, seeds)) - y)
    guided = per_sample_norm(A(build(sampler_class)(prior, A, y, seeds)) - y)
    assert guided.mean() < 0.5 * unguided.mean()


@pytest.mark.parametrize("sampler_class", GUIDED, ids=lambda c: c.__name__)
def test_guided_samplers_need_a_measurement(problem, sampler_class):
    prior, _, _ = problem
    with pytest.raises(ValueError, match="needs an operator"):
        build(sampler_class, num_steps=3)(prior, None, None, seeds=[0])


@pytest.mark.parametrize("sampler_class", GUIDED, ids=lambda c: c.__name__)
def test_non_finite_guidance_is_a_clear_error(problem, sampler_class):
    prior, _, y = problem

    class Overflowing(MatrixOperator):  # NaN for the second sample only
        def forward(self, x):
            return super().forward(x) * torch.tensor([1.0, torch.nan])[:, None]

    with pytest.raises(FloatingPointError, match=r"non-finite guidance .* samples \[1\]"):
        build(sampler_class, num_steps=3)(prior, Overflowing(torch.eye(6, 16)), y[:2], seeds=[0, 1])

    class NaNWithoutGradient(Operator):  # the residual is NaN, its gradient is not
        def forward(self, x):
            return torch.where(x[:, :6] > 1e9, x[:, :6], torch.nan)

    if not sampler_class.linear_only:  # PSLD and the spectral methods take linear operators only
        with pytest.raises(FloatingPointError, match="non-finite guidance"):
            build(sampler_class, num_steps=3)(prior, NaNWithoutGradient(), y[:2], seeds=[0, 1])


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda c: c.__name__)
def test_every_sampler_runs_on_a_karras_schedule_and_reports_every_step(problem, sampler_class):
    prior, A, y = problem
    seen = []
    schedule = KarrasSchedule(sigma_min=0.01, sigma_max=4.0, rho=7.0)
    x = build(sampler_class, num_steps=12, schedule=schedule)(prior, A, y[:2], [0, 1], callback=seen.append)
    assert torch.isfinite(x).all() and [s["step"] for s in seen] == list(range(12))
    assert seen[0]["sigma"] == pytest.approx(4.0) and seen[-1]["sigma"] == pytest.approx(0.01)


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda c: c.__name__)
def test_bad_settings_are_rejected_at_construction(sampler_class):
    with pytest.raises(ValueError):
        build(sampler_class, num_steps=0)
    if "eta" in inspect.signature(sampler_class).parameters:  # RED-diff has no solver to mix
        with pytest.raises(ValueError):
            build(sampler_class, eta=1.5)
    for name in ("zeta", "guidance_rate", "gamma"):
        if name in inspect.signature(sampler_class).parameters:
            with pytest.raises(ValueError):
                sampler_class(**{name: -1.0})


def test_a_middle_step_exists_for_every_step_count():
    """The step a benchmark or a run's cost estimate times: step num_steps // 2, also of a 1-step run."""
    from cse.priors import GaussianMixturePrior
    from cse.samplers import Ancestral

    prior = GaussianMixturePrior(torch.zeros(1, 2), std=torch.ones(1))
    for num_steps in (1, 2, 5):
        sampler = Ancestral(num_steps)
        ctx = sampler.context(prior, None, None, [0], shape=(2,))
        assert sampler.middle_step(prior, ctx).shape == (1, 2) and ctx.index == num_steps // 2
