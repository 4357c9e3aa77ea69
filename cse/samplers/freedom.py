"""FreeDoM (Yu et al., ICCV 2023) as the paper's eq. 36 uses it: DPS with time travel.

At the steps of the travel window, the step ``sigma -> sigma_next`` is taken ``repeats`` times; all
but the last are followed by re-noising back to ``sigma`` with the forward process,
``u <- u_next + sqrt(sigma^2 - sigma_next^2) n``. (The paper's research code re-noises with
``sqrt(beta_i)`` of the training schedule indexed by the loop, about 0.03 instead of 1.2-1.6 at
those steps, which makes its travel nearly a no-op; this is the forward process as FreeDoM defines it.)
"""

from __future__ import annotations

from torch import Tensor

from cse.samplers.common import Sampler, SamplingContext, Schedule, check_step_size
from cse.samplers.dps import dps


class FreeDoM(Sampler):
    """DPS (step size ``zeta``) with ``repeats`` passes at the steps whose index lies in
    ``travel`` (fractions of the trajectory; the default (0.05, 0.1) is steps 25-50 of 500, the
    paper's research code: one time travel, K = 2)."""

    def __init__(
        self,
        zeta: float = 1.0,
        num_steps: int = 500,
        repeats: int = 2,
        travel: tuple[float, float] = (0.05, 0.1),
        eta: float = 1.0,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(num_steps, eta, schedule)
        if repeats < 1 or not 0 <= travel[0] <= travel[1] <= 1:
            raise ValueError(f"need repeats >= 1 and 0 <= travel[0] <= travel[1] <= 1, got {repeats}, {travel}")
        self.zeta, self.repeats, self.travel = check_step_size("zeta", zeta), repeats, tuple(travel)

    def travels(self, index: int) -> bool:
        first, last = (round(f * self.num_steps) for f in self.travel)
        return first <= index <= last

    def step(self, u: Tensor, sigma: float, sigma_next: float, ctx: SamplingContext) -> tuple[Tensor, dict]:
        passes = self.repeats if self.travels(ctx.index) else 1
        for n in range(passes):
            u_next, report = dps(u, sigma, sigma_next, ctx.denoise, ctx.residual, ctx.noise(), self.zeta, ctx.eta)
            if n < passes - 1:  # travel back in time: the forward process from sigma_next to sigma
                u = u_next + (sigma**2 - sigma_next**2) ** 0.5 * ctx.noise()
        return u_next, {**report, "passes": passes}
