"""PSLD (Rout et al., NeurIPS 2023), as the paper's eq. 35 states it and its research code runs it.

The DPS step on ``||A(D(x0)) - y|| + gamma ||x0 - E(A^T y + D(x0) - A^T A D(x0))||``: the gluing term
asks the Tweedie estimate ``x0 = E[z0 | z_t]`` to be a fixed point of decoding, replacing the
measured part by the measurement, and encoding again. ``A^T`` is the operator's exact adjoint
(the reference code uses nearest-neighbour up-sampling for SR and the identity for blur, which are
not), so PSLD takes linear operators only. E draws from the VAE's posterior, as both the official
and the paper's research code do, with the sample's own noise.
"""

from __future__ import annotations

from torch import Tensor

from cse.operators.base import LinearOperator, Operator
from cse.priors.base import Prior
from cse.samplers.common import Residual, Sampler, SamplingContext, Schedule, check_step_size, per_sample_norm
from cse.samplers.dps import dps


def gluing_residual(prior: Prior, operator: LinearOperator, y: Tensor, gamma: float, noise: Tensor | None) -> Residual:
    """``x0 -> ||A(D(x0)) - y|| + gamma ||x0 - E(A^T y + D(x0) - A^T A D(x0))||`` per sample ``[B]``."""

    def residual(x0_hat: Tensor) -> Tensor:
        image = prior.decode(x0_hat)
        fitted = operator(image)
        glued = operator.adjoint(y) + image - operator.adjoint(fitted)
        return per_sample_norm(fitted - y) + gamma * per_sample_norm(x0_hat - prior.encode(glued, noise))

    return residual


class PSLD(Sampler):
    """PSLD with DPS's step size ``zeta`` and gluing weight ``gamma`` (0.002 in the paper's runs on
    SD2, which scale the whole loss by zeta: the gluing term's weight is gamma * zeta).

    ``sample_encoder``: E draws from the VAE posterior (True, the reference) or returns its mean.
    """

    linear_only = True

    def __init__(
        self,
        zeta: float = 1.0,
        gamma: float = 0.002,
        num_steps: int = 500,
        sample_encoder: bool = True,
        eta: float = 1.0,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(num_steps, eta, schedule)
        self.zeta, self.gamma = check_step_size("zeta", zeta), check_step_size("gamma", gamma)
        self.sample_encoder = sample_encoder

    def validate(self, prior: Prior, operator: Operator | None, y: Tensor | None) -> None:
        super().validate(prior, operator, y)
        if not isinstance(operator, LinearOperator):
            raise TypeError(f"PSLD needs a linear operator with an adjoint, got {type(operator).__name__}")

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        encoder_noise = ctx.noise() if self.sample_encoder else None
        residual = gluing_residual(ctx.prior, ctx.operator, ctx.y, self.gamma, encoder_noise)
        return dps(u, sigma, sigma_next, ctx.denoise, residual, ctx.noise(), self.zeta, ctx.eta)
