"""The discrete diffusion schedule, seen in VE form.

A VP chain ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` is the VE state
``u = x_t / sqrt(ab_t) = x0 + sigma_t eps`` with ``sigma_t = sqrt((1 - ab_t) / ab_t)``.
Samplers only ever see ``sigmas``; priors map a sigma back to a (fractional) timestep.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cse.digest import tensor_digest


class DiscreteSchedule:
    """A schedule given by its training ``alphas_cumprod`` ``[T]``, decreasing in t."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if alphas_cumprod.ndim != 1 or not (alphas_cumprod[1:] < alphas_cumprod[:-1]).all():
            raise ValueError("alphas_cumprod must be a 1-D, strictly decreasing tensor")
        self.alphas_cumprod = alphas_cumprod
        self.train_sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()

    @classmethod
    def scaled_linear(
        cls, beta_start: float = 0.00085, beta_end: float = 0.012, num_train_steps: int = 1000
    ) -> DiscreteSchedule:
        """Stable Diffusion's betas: linear in sqrt(beta) (SD2's defaults)."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_steps, dtype=torch.float64) ** 2
        return cls(torch.cumprod(1 - betas, dim=0))

    def __repr__(self) -> str:
        return f"DiscreteSchedule(num_train_steps={self.num_train_steps}, digest={tensor_digest(self.alphas_cumprod)})"

    @property
    def num_train_steps(self) -> int:
        return len(self.alphas_cumprod)

    @property
    def sigma_max(self) -> float:
        return float(self.train_sigmas[-1])

    def timesteps(self, num_steps: int) -> Tensor:
        """``linspace`` spacing from T-1 down to 0, fractional where N does not divide T.

        As diffusers' ``timestep_spacing="linspace"`` except for N = 1, where this starts from
        T-1 (pure noise) rather than 0.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        return torch.linspace(self.num_train_steps - 1, 0, num_steps, dtype=torch.float64)

    def sigmas(self, num_steps: int) -> Tensor:
        """``[num_steps + 1]`` decreasing sigmas ending in 0 (float64, CPU).

        Sampling starts from ``sigmas[0] * n`` with ``sigmas[0] = sigma_max``, as diffusers'
        Euler-ancestral scheduler does with linspace spacing (the paper's reference runs).
        """
        return torch.cat([self.t_to_sigma(self.timesteps(num_steps)), torch.zeros(1, dtype=torch.float64)])

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Sigma at fractional timesteps, linear interpolation between training steps."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_train_steps - 1)
        low = t.floor().long()
        high = (low + 1).clamp(max=self.num_train_steps - 1)
        frac = t - low
        return (1 - frac) * self.train_sigmas[low] + frac * self.train_sigmas[high]

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`t_to_sigma` (piecewise linear in sigma, exact at training steps)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        grid = self.train_sigmas.to(sigma.device)
        sigma = sigma.clamp(float(grid[0]), float(grid[-1]))
        high = torch.searchsorted(grid, sigma.contiguous()).clamp(1, len(grid) - 1)
        low = high - 1
        frac = (sigma - grid[low]) / (grid[high] - grid[low])
        return low.to(torch.float64) + frac


class KarrasSchedule:
    """Karras et al. (2022, eq. 5) sigmas, ``(s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``
    for i = 0 .. N-1, then 0: an alternative to a prior's discrete schedule (the paper's toy example,
    Appendix A.4: sigma_max = 4, rho = 7, 100 steps)."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        if not 0 < sigma_min < sigma_max or rho <= 0:
            raise ValueError(f"need 0 < sigma_min < sigma_max and rho > 0, got {sigma_min}, {sigma_max}, {rho}")
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho

    def __repr__(self) -> str:
        return f"KarrasSchedule(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, rho={self.rho})"

    def sigmas(self, num_steps: int) -> Tensor:
        """``[num_steps + 1]`` decreasing sigmas ending in 0 (float64, CPU)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
        low, high = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return torch.cat([(high + ramp * (low - high)) ** self.rho, torch.zeros(1, dtype=torch.float64)])
