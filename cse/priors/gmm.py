"""The exact tier: a Gaussian-mixture prior with analytic denoiser and analytic posterior."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cse.digest import tensor_digest
from cse.priors.base import Prior
from cse.priors.schedule import DiscreteSchedule


class GaussianMixturePrior(Prior):
    """``p(x0) = sum_k w_k N(x0; m_k, C_k)`` over flattened data of dimension D.

    Args:
        means: ``[K, D]``, or ``[B, K, D]`` for a batch of B mixtures (sample b of a batch is
            denoised by mixture b; :meth:`posterior` returns such a batch).
        covs: ``[K, D, D]`` symmetric positive semi-definite. Give either ``covs`` or ``std``.
        std: isotropic component standard deviation, ``C_k = std^2 I``.
        weights: ``[K]`` or ``[B, K]``, normalised here; uniform when omitted.
        schedule: the diffusion schedule samplers take their sigmas from (SD2's by default).
    """

    def __init__(
        self,
        means: Tensor,
        covs: Tensor | None = None,
        std: float | None = None,
        weights: Tensor | None = None,
        schedule: DiscreteSchedule | None = None,
    ) -> None:
        super().__init__()
        means = torch.as_tensor(means)
        if means.ndim not in (2, 3):
            raise ValueError(f"means must be [K, D] or [B, K, D], got shape {tuple(means.shape)}")
        num_components, dim = means.shape[-2:]
        if (covs is None) == (std is None):
            raise ValueError("give exactly one of covs or std")
        if covs is None:
            evals = torch.full((num_components, dim), float(std) ** 2, dtype=means.dtype)
            evecs = torch.eye(dim, dtype=means.dtype).expand(num_components, dim, dim).clone()
        else:
            covs = torch.as_tensor(covs, dtype=means.dtype)
            if covs.shape != (num_components, dim, dim):
                raise ValueError(f"covs must be [{num_components}, {dim}, {dim}], got {tuple(covs.shape)}")
            evals, evecs = torch.linalg.eigh((covs + covs.mT) / 2)
            evals = evals.clamp(min=0)
        if weights is None:
            weights = torch.ones(num_components, dtype=means.dtype)
        weights = torch.as_tensor(weights, dtype=means.dtype)
        if weights.shape[-1] != num_components or (weights < 0).any():
            raise ValueError(f"weights must be non-negative with last dimension {num_components}")
        self.register_buffer("means", means)
        self.register_buffer("evals", evals)  # C_k = V_k diag(evals_k) V_k^T
        self.register_buffer("evecs", evecs)
        self.register_buffer("log_weights", (weights / weights.sum(-1, keepdim=True)).log())
        self.schedule = schedule or DiscreteSchedule.scaled_linear()

    def describe(self) -> dict:
        digest = tensor_digest(self.means, self.evals, self.evecs, self.log_weights)
        return {"class": type(self).__name__, "parameters_sha256": digest, "schedule": repr(self.schedule)}

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def batch_size(self) -> int | None:
        """B for a batch of mixtures, None for a single one."""
        return self.means.shape[0] if self.means.ndim == 3 else None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    @property
    def covs(self) -> Tensor:
        return self.evecs @ torch.diag_embed(self.evals) @ self.evecs.mT

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    def _per_component(self, u: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
        """Log joint ``log w_k N(u; m_k, C_k + s^2 I)`` ``[B, K]`` and ``E[x0 | u, k]`` ``[B, K, D]``."""
        flat = u.reshape(u.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"expected samples with {self.dim} values, got shape {tuple(u.shape)}")
        if self.batch_size is not None and self.batch_size != flat.shape[0]:
            raise ValueError(f"a batch of {self.batch_size} mixtures denoises as many samples, got {flat.shape[0]}")
        sigma = torch.as_tensor(sigma, dtype=flat.dtype, device=flat.device)
        var = self.evals + sigma.reshape(-1, 1, 1) ** 2  # [B or 1, K, D]
        z = torch.einsum("bkd,kde->bke", flat[:, None, :] - self.means, self.evecs)
        log_normal = -0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        log_joint = self.log_weights + log_normal
        x0_given_k = self.means + torch.einsum("bke,kde->bkd", self.evals / var * z, self.evecs)
        return log_joint, x0_given_k

    def denoise(self, u: Tensor, sigma: Tensor | float) -> Tensor:
        """Exact ``E[x0 | u]`` (sigma > 0): responsibilities times per-component Wiener estimates.
        (No CSE to attach: the exact one is :meth:`posterior`.)"""
        log_joint, x0_given_k = self._per_component(u, sigma)
        return (log_joint.softmax(-1)[..., None] * x0_given_k).sum(1).reshape(u.shape)

    def responsibilities(self, u: Tensor, sigma: Tensor | float) -> Tensor:
        """``p(k | u)`` ``[B, K]``: which component a (noisy) sample came from."""
        return self._per_component(u, sigma)[0].softmax(-1)

    def log_prob(self, u: Tensor, sigma: Tensor | float) -> Tensor:
        """``log p_sigma(u)`` ``[B]`` of the noisy marginal."""
        return self._per_component(u, sigma)[0].logsumexp(-1)

    def score(self, u: Tensor, sigma: Tensor | float) -> Tensor:
        """``grad_u log p_sigma(u) = (E[x0 | u] - u) / sigma^2`` (Tweedie)."""
        sigma = torch.as_tensor(sigma, dtype=u.dtype, device=u.device)
        return (self.denoise(u, sigma) - u) / sigma.reshape(-1, *[1] * (u.ndim - 1)) ** 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples of ``x0``: ``[n, D]``, or ``[B, n, D]`` for a batch of mixtures."""
        log_weights = self.log_weights.reshape(-1, self.log_weights.shape[-1])
        means = self.means.reshape(-1, *self.means.shape[-2:])
        component = torch.multinomial(log_weights.exp().cpu(), n, replacement=True, generator=generator)
        component = component.to(means.device)  # [B, n]
        z = torch.randn(*component.shape, self.dim, generator=generator, dtype=means.dtype).to(means.device)
        scaled = self.evals[component].sqrt() * z
        x = torch.gather(means, 1, component[..., None].expand(-1, -1, self.dim))
        x = x + torch.einsum("bnde,bne->bnd", self.evecs[component], scaled)
        return x if self.batch_size is not None else x[0]

    def posterior(self, A: Tensor, y: Tensor, noise_std: float) -> GaussianMixturePrior:
        """Exact ``p(x0 | y)`` for ``y = A x0 + noise_std * n``: a batch of B mixtures.

        Per component (Bishop, PRML eq. 2.113-2.117, in the Kalman-gain form that allows singular
        ``C_k``): ``S = A C A^T + s^2 I``, ``G = C A^T S^-1``, mean ``m + G (y - A m)``,
        covariance ``C - G A C``, weight ``w N(y; A m, S)``.

        Args:
            A: ``[M, D]``.  y: ``[B, M]``.  noise_std: s > 0 unless every ``A C_k A^T`` is invertible.
        """
        if self.batch_size is not None:
            raise ValueError("posterior() of a batch of mixtures is not supported")
        A = torch.as_tensor(A, dtype=self.means.dtype, device=self.means.device)
        y = torch.as_tensor(y, dtype=self.means.dtype, device=self.means.device).reshape(-1, A.shape[0])
        covs = self.covs
        AC = A @ covs  # [K, M, D]
        S = AC @ A.T + noise_std**2 * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        chol = torch.linalg.cholesky(S)
        gain = torch.cholesky_solve(AC, chol).mT  # [K, D, M]
        post_covs = covs - gain @ AC
        innovation = y[:, None, :] - self.means @ A.T  # [B, K, M]
        post_means = self.means + torch.einsum("kdm,bkm->bkd", gain, innovation)
        whitened = torch.linalg.solve_triangular(chol, innovation.permute(1, 2, 0), upper=False)  # [K, M, B]
        log_evidence = -0.5 * (
            (whitened**2).sum(1).T
            + 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            + A.shape[0] * math.log(2 * math.pi)
        )
        post_log_weights = (self.log_weights + log_evidence).log_softmax(-1)
        return GaussianMixturePrior(post_means, covs=post_covs, weights=post_log_weights.exp(), schedule=self.schedule)
