"""The paper's Observations I and II about DPS, as measurements on any prior (Lightning-free).

**The score DPS implies** (the paper's Proposition 1, eq. 9, in our VE form). With
``s(u) = (D(u, sigma) - u) / sigma^2`` the unconditional score (Tweedie), the ancestral step is
``u' = u + sigma (sigma - sigma_down) s(u) + sigma_up n``, since ``D - u = sigma^2 s`` and
``sigma_down = sigma_next^2 / sigma``: the same step with a conditional score ``s_c`` in place of
``s`` is the step of the conditional chain. DPS takes ``u' = [ancestral step] - zeta g`` with
``g = grad_u ||A(D(u, sigma)) - y||``, which is that step with

    s_DPS(u) = s(u) - zeta g(u) / (sigma (sigma - sigma_down)) = s(u) - zeta g(u) / (sigma^2 - sigma_next^2).

So DPS's implied likelihood score is ``-zeta / (sigma^2 - sigma_next^2) g``: a constant zeta weighs
the likelihood more as the steps shrink (score-based guidance keeps that weight fixed; see
``DPS(step_scaling="noise_level")``).

**The reference** is a conditional denoiser: a CSE trained on a full training split (the role
StableSR plays in the paper), or, on Gaussian mixtures, the exact posterior, whose denoiser gives
the exact conditional score at every noise level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
from torch import Tensor

from cse.samplers.common import Denoiser, Residual, ancestral_step, measurement_grad, per_sample_norm


def score(x0_hat: Tensor, u: Tensor, sigma: float) -> Tensor:
    """Tweedie: ``(D(u, sigma) - u) / sigma^2``."""
    return (x0_hat - u) / sigma**2


def implied_dps_score(uncond: Tensor, grad: Tensor, zeta: float, sigma: float, sigma_next: float) -> Tensor:
    """``s - zeta g / (sigma^2 - sigma_next^2)`` (Proposition 1 in VE form, see the module's docstring)."""
    return uncond - zeta * grad / (sigma**2 - sigma_next**2)


def probe(
    u: Tensor, sigma: float, uncond: Denoiser, reference: Denoiser, residual: Residual
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """At state ``u``: the unconditional score, the reference score, the residual's gradient, and
    the reference's ``x0_hat``. Two network evaluations (one back-propagated)."""
    grad, x0_uncond, _ = measurement_grad(u, sigma, uncond, residual)
    with torch.no_grad():
        x0_ref = reference(u, sigma)
    return score(x0_uncond, u, sigma), score(x0_ref, u, sigma), grad, x0_ref


def score_errors(
    uncond: Denoiser,
    reference: Denoiser,
    residual: Residual,
    sigmas: Sequence[float],
    noise: Callable[[], Tensor],
    zetas: Sequence[float],
) -> dict[str, Tensor]:
    """Observation I along the reference's own ancestral trajectory: at every step, per sample,
    ``||s - s_ref||``, ``||s_DPS(zeta) - s_ref||`` for each zeta, and ``||s_ref||`` for scale.
    Returns ``[steps, B]`` tensors keyed ``sigma``, ``uncond``, ``reference_norm``, ``dps_<zeta>``."""
    u = sigmas[0] * noise()
    curves: dict[str, list[Tensor]] = {"uncond": [], "reference_norm": [], **{f"dps_{z:g}": [] for z in zetas}}
    for sigma, sigma_next in pairwise(sigmas):
        s, s_ref, grad, x0_ref = probe(u, sigma, uncond, reference, residual)
        curves["uncond"].append(per_sample_norm(s - s_ref))
        curves["reference_norm"].append(per_sample_norm(s_ref))
        for z in zetas:
            curves[f"dps_{z:g}"].append(per_sample_norm(implied_dps_score(s, grad, z, sigma, sigma_next) - s_ref))
        mu, sigma_up = ancestral_step(u, x0_ref, sigma, sigma_next)
        u = mu + sigma_up * noise()
    out = {name: torch.stack(values) for name, values in curves.items()}
    out["sigma"] = torch.tensor(list(sigmas[:-1]), dtype=torch.float64)
    return out


def score_means(
    uncond: Denoiser,
    reference: Denoiser,
    residual: Residual,
    sigma: float,
    sigma_next: float,
    u: Tensor,
    zetas: Sequence[float],
) -> dict[str, dict[str, float]]:
    """Observation II for one measurement: ``u`` ``[N, ...]`` holds N independent draws of x_T (the
    measurement repeated); for the unconditional, reference and DPS scores at each zeta: ``|E[s]|``,
    the mean over dimensions of the absolute mean over draws, and the ``floor`` that value would
    have if the true mean were 0 (``sqrt(2 / pi)`` times the mean standard error)."""
    s, s_ref, grad, _ = probe(u, sigma, uncond, reference, residual)
    scores = {"uncond": s, "reference": s_ref}
    scores |= {f"dps_{z:g}": implied_dps_score(s, grad, z, sigma, sigma_next) for z in zetas}
    n = u.shape[0]
    out = {}
    for name, values in scores.items():
        flat = values.detach().flatten(1).double()
        floor = (2 / torch.pi) ** 0.5 * (flat.std(0) / n**0.5).mean()
        out[name] = {"abs_mean": float(flat.mean(0).abs().mean()), "floor": float(floor)}
    return out
