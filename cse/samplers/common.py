"""Pieces every sampler shares: the ancestral step, measurement guidance, spherical projection,
and the loop that turns a per-step update into ``sampler(prior, operator, y, seeds) -> x0``.

The solver and the schedule are choices of every sampler, not copies of each method: ``eta``
interpolates between the ancestral (DDPM, ``eta = 1``, the paper's reference runs) and the DDIM
probability-flow step (``eta = 0``, the paper's Table 9); ``schedule`` replaces the prior's own
discrete sigmas (e.g. a ``KarrasSchedule``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal, Protocol

import torch
from torch import Tensor

from cse.operators.base import Operator
from cse.operators.svd import has_svd
from cse.priors.base import Prior, pixel_prior
from cse.seeding import PerSampleNoise

Denoiser = Callable[[Tensor, float], Tensor]
"""``(u, sigma) -> x0_hat``: ``prior.denoise`` (a CSE's control image, if any, bound to the prior)."""
Residual = Callable[[Tensor], Tensor]
"""``x0_hat -> [B]`` per-sample measurement residual ``||A(decode(x0_hat)) - y||``."""
Callback = Callable[[dict], None]


def check_step_size(name: str, value: float) -> float:
    """A guidance step size must be a finite number >= 0."""
    if not (value >= 0 and value < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


StepScaling = Literal["constant", "noise_level"]


def check_step_scaling(scaling: str) -> StepScaling:
    if scaling not in ("constant", "noise_level"):
        raise ValueError(f"step_scaling must be 'constant' or 'noise_level', got {scaling!r}")
    return scaling


def scaled_step(zeta: float, sigma: float, sigma_next: float, scaling: StepScaling) -> float:
    """The guidance step at ``sigma -> sigma_next``: ``zeta`` (the papers') or, with
    ``"noise_level"``, ``zeta (sigma^2 - sigma_next^2)``, the step score-based guidance takes, for
    which DPS's implied likelihood weight is constant (see ``cse.analysis.scores``)."""
    return zeta if scaling == "constant" else zeta * (sigma**2 - sigma_next**2)


def per_sample_norm(x: Tensor) -> Tensor:
    """Euclidean norm over all but the batch dimension, ``[B]``."""
    return x.flatten(1).norm(dim=1)


def batch_view(v: Tensor, like: Tensor) -> Tensor:
    """``[B]`` -> ``[B, 1, ..., 1]`` broadcastable against ``like``."""
    return v.reshape(-1, *[1] * (like.ndim - 1))


def ancestral_step(
    u: Tensor, x0_hat: Tensor, sigma: float, sigma_next: float, eta: float = 1.0
) -> tuple[Tensor, float]:
    """Mean and std of the Euler-ancestral transition ``sigma -> sigma_next`` (k-diffusion's
    ``get_ancestral_step``).

    With ``eta = 1`` this is, in VE form, DDPM's posterior ``q(u_next | u, x0_hat)``:
    ``sigma_up^2 = sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2``, ``sigma_down = sigma_next^2 / sigma``;
    with ``eta = 0`` it is DDIM's deterministic step ``x0_hat + (sigma_next / sigma)(u - x0_hat)``.
    """
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    mu = x0_hat + (sigma_down / sigma) * (u - x0_hat)
    return mu, sigma_up


def sphere_radius(sigma_up: float, like: Tensor) -> float:
    """Radius where ``N(mu, sigma_up^2 I)`` concentrates: ``sqrt(n) sigma_up``, n = values per sample."""
    return like[0].numel() ** 0.5 * sigma_up


def project_to_sphere(u: Tensor, center: Tensor, radius: float) -> Tensor:
    """Each sample moved radially onto the sphere of ``radius`` around its ``center``."""
    offset = u - center
    return center + radius * offset / batch_view(per_sample_norm(offset).clamp_min(1e-12), offset)


def measurement_residual(prior: Prior, operator: Operator, y: Tensor) -> Residual:
    """The non-squared per-sample norm ``||A(decode(x0_hat)) - y||`` (DPS and the paper)."""
    return lambda x0_hat: per_sample_norm(operator(prior.decode(x0_hat)) - y)


def measurement_grad(u: Tensor, sigma: float, denoise: Denoiser, residual: Residual) -> tuple[Tensor, Tensor, Tensor]:
    """``grad_u ||A(D(u, sigma)) - y||`` per sample, with ``x0_hat`` and the residual ``[B]``.

    The residuals are summed over the batch before ``autograd.grad``, so sample i's gradient
    is that of its own residual alone.
    """
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        x0_hat = denoise(u, sigma)
        loss = residual(x0_hat)
        (grad,) = torch.autograd.grad(loss.sum(), u)
    if grad.is_meta:  # shapes without values (counting FLOPs): nothing to check
        return grad, x0_hat.detach(), loss.detach()
    # one reduction per sample: a NaN or inf anywhere in a sample's gradient or residual makes its sum non-finite
    bad = ~torch.isfinite(grad.flatten(1).sum(1, dtype=torch.float32) + loss.detach())
    if bad.any():
        raise FloatingPointError(
            f"non-finite guidance at sigma={sigma:.4g} for samples {bad.nonzero().flatten().tolist()} "
            f"(residuals {loss.detach()[bad].tolist()}); lower the step size or use fp32"
        )
    return grad, x0_hat.detach(), loss.detach()


def check_finite(values: Tensor, sigma: float, what: str = "guidance") -> Tensor:
    """``values`` ``[B]`` (a residual), or a FloatingPointError naming the samples where one is not finite."""
    bad = ~torch.isfinite(values.detach())
    if not values.is_meta and bad.any():
        raise FloatingPointError(
            f"non-finite {what} at sigma={sigma:.4g} for samples {bad.nonzero().flatten().tolist()} "
            f"(residuals {values.detach()[bad].tolist()}); lower the step size or use fp32"
        )
    return values


def check_spectral(method: str, prior: Prior, operator: Operator | None) -> None:
    """Refuse what a method working in the operator's SVD cannot solve (DDRM, PiGDM): an operator
    without an SVD here, or a latent prior (the SVD is of A on images, not through a decoder)."""
    if not has_svd(operator):
        raise TypeError(f"{method} needs a linear operator with an SVD, got {type(operator).__name__}")
    if not pixel_prior(prior):
        raise TypeError(f"{method} needs a pixel prior: its SVD is of A on images, not through a decoder")


def state_template(prior: Prior, y: Tensor | None) -> Tensor:
    """An empty tensor with the device and dtype of the diffusion state: ``y``'s, else the prior's."""
    reference = y if y is not None else next(iter([*prior.parameters(), *prior.buffers()]), torch.empty(0))
    return reference.new_empty(0)


def per_sample_std(noise_std: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """A noise std for all (a float) or per sample, as ``[batch]`` on ``like``'s device and dtype."""
    std = torch.as_tensor(noise_std, dtype=torch.float64).detach().cpu()
    if std.ndim == 0:
        std = std.expand(batch)
    if std.shape != (batch,) or not bool((std >= 0).all() & torch.isfinite(std).all()):
        raise ValueError(f"noise_std must be a finite number >= 0 or one per sample ({batch}), got {noise_std}")
    return std.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)


@dataclass
class SamplingContext:
    """What a step sees: the prior's denoiser, the residual (None when unguided), fresh
    per-sample noise, and the problem itself for methods with losses of their own."""

    denoise: Denoiser
    residual: Residual | None
    noise: Callable[[], Tensor]
    prior: Prior
    operator: Operator | None
    y: Tensor | None
    eta: float = 1.0
    index: int = 0  # of the current step, 0 = the noisiest
    num_steps: int = 1
    noise_std: Tensor | None = None
    """``[B]`` std of each measurement's noise on the [-1, 1] scale (given, or estimated from ``y``):
    what the methods with a likelihood of their own (DDRM, DiffPIR, PiGDM, DAPS) weigh ``y`` by."""
    memory: dict = field(default_factory=dict)
    """What a method carries from step to step within one run (RED-diff's optimiser moments)."""


class Schedule(Protocol):
    def sigmas(self, num_steps: int) -> Tensor:
        """``[num_steps + 1]`` decreasing sigmas ending in 0."""


class Sampler(ABC):
    """``sampler(prior, operator, y, seeds) -> x0`` in image space; subclasses define one step.

    Args (shared by every sampler):
        num_steps: diffusion steps.
        eta: 1 = ancestral (DDPM) steps, 0 = DDIM (probability flow), between: a mix.
        schedule: sigmas to step through (default: the prior's own discrete schedule).
    """

    guided: bool = True
    linear_only: bool = False
    """Whether the sampler takes linear operators only (it refuses others in ``validate``)."""

    def __init__(self, num_steps: int, eta: float = 1.0, schedule: Schedule | None = None) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        self.num_steps, self.eta, self.schedule = num_steps, eta, schedule

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"{type(self).__name__}({settings})"

    @abstractmethod
    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        """One transition ``sigma -> sigma_next``: the next state and what to report."""

    def validate(self, prior: Prior, operator: Operator | None, y: Tensor | None) -> None:
        """Refuse a problem this sampler cannot solve, before any step."""
        if self.guided and (operator is None or y is None):
            raise ValueError(f"{type(self).__name__} needs an operator and a measurement y")

    def context(
        self,
        prior: Prior,
        operator: Operator | None,
        y: Tensor | None,
        seeds: Sequence[int] | Tensor,
        shape: Sequence[int] | None = None,
        noise_std: float | Tensor = 0.0,
    ) -> SamplingContext:
        """What the steps of one run see (see ``__call__`` for the arguments)."""
        self.validate(prior, operator, y)
        if y is not None and y.shape[0] != len(seeds):
            raise ValueError(f"need one seed per measurement: {len(seeds)} seeds for {y.shape[0]}")
        template = state_template(prior, y)
        return SamplingContext(
            denoise=prior.denoise,
            residual=measurement_residual(prior, operator, y) if self.guided else None,
            noise=PerSampleNoise(seeds, shape or prior.sample_shape, like=template),
            prior=prior,
            operator=operator,
            y=y,
            eta=self.eta,
            num_steps=self.num_steps,
            noise_std=per_sample_std(noise_std, len(seeds), template),
        )

    def middle_step(self, prior: Prior, ctx: SamplingContext, sigmas: list[float] | None = None) -> Tensor:
        """One step at the middle of the trajectory from a fresh state: what a step costs (time,
        memory), measured without running a whole trajectory. ``sigmas``: ``self.sigmas(prior)``,
        made once by a caller timing many steps (a run makes them once)."""
        sigmas = sigmas or self.sigmas(prior)
        ctx.index = (len(sigmas) - 1) // 2  # of num_steps steps (a 1-step run has only step 0)
        sigma, sigma_next = sigmas[ctx.index], sigmas[ctx.index + 1]
        return self.step(sigma * ctx.noise(), sigma, sigma_next, ctx)[0]

    def initial_state(self, sigma: float, ctx: SamplingContext) -> Tensor:
        """The first state, at ``sigma``: ``sigma`` times fresh noise (DDRM draws it around ``y``)."""
        return sigma * ctx.noise()

    def sigmas(self, prior: Prior) -> list[float]:
        """The ``num_steps + 1`` noise levels of a run, ending in 0."""
        return (self.schedule or prior.schedule).sigmas(self.num_steps).tolist()

    def __call__(
        self,
        prior: Prior,
        operator: Operator | None,
        y: Tensor | None,
        seeds: Sequence[int] | Tensor,
        callback: Callback | None = None,
        shape: Sequence[int] | None = None,
        noise_std: float | Tensor = 0.0,
    ) -> Tensor:
        """Restore ``y`` ``[B, ...]`` with one seed per sample; returns ``[B, C, H, W]`` images (``decode``d).

        A "+CSE" run is a run on ``prior.conditioned(measurement.lift(y))``; ``shape`` overrides
        ``prior.sample_shape``; ``callback`` receives a dict per step; ``noise_std``: the std of
        the measurement noise on [-1, 1], one for all or ``[B]`` (used by methods that weigh ``y``
        by it; DPS, DMAP and the paper's other methods do not).
        """
        ctx = self.context(prior, operator, y, seeds, shape, noise_std)
        sigmas = self.sigmas(prior)
        u = self.initial_state(sigmas[0], ctx)
        for index, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
            ctx.index = index
            u, report = self.step(u, sigma, sigma_next, ctx)
            if callback is not None:
                callback({"step": index, "sigma": sigma, "sigma_next": sigma_next, "u": u, **report})
        return prior.decode(u)
