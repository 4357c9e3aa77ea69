"""DeepInverse bridge: cse operators as DeepInverse physics and back, a cse prior as a DeepInverse denoiser.

Optional: needs the ``compare`` extra (``pip install "cse[compare]"``, i.e. deepinv==0.5.0).

Conventions at the boundary. cse images live on [-1, 1], DeepInverse's on [0, 1]:
``x = 2 x01 - 1``, and a noise std on [-1, 1] is twice its value on [0, 1] (``sigma = 2 sigma01``).

* A **linear** operator is the same matrix on both sides: the physics applies cse's ``A`` to [0, 1]
  images, ``A01 = A``. Since ``A(2 x01 - 1) = 2 A x01 - A 1``, a cse measurement ``y = A x`` is the
  physics' measurement ``y01 = A x01 = (y + A 1) / 2`` (:func:`measurement_to_unit`). For operators
  that keep constants (``A 1 = 1``: super-resolution, a normalised blur) this is ``(y + 1) / 2``;
  for inpainting ``A 1`` is the mask. Measurement noise ``std`` on [-1, 1] is ``std / 2`` on [0, 1].
* A **nonlinear** operator's measurement is taken as an image: ``A01(x01) = (A(2 x01 - 1) + 1) / 2``
  (forward only). For a linear ``A`` with ``A 1 = 1`` both definitions agree.
* A denoiser ``D01(x01, s01) = (D(2 x01 - 1, 2 s01) + 1) / 2``, ``D`` the prior's VE denoiser
  ``E[x0 | x0 + sigma n = u]`` on [-1, 1] (pixel-space priors only: ``decode`` the identity).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cse.operators.base import LinearOperator, Operator
from cse.priors.base import Prior

try:
    import deepinv as dinv
except ImportError as error:  # pragma: no cover - the test module skips without deepinv
    raise ImportError('the DeepInverse bridge needs deepinv: pip install "cse[compare]"') from error


def noise_model(noise_std: float) -> dinv.physics.GaussianNoise:
    """DeepInverse's Gaussian noise for a std given on [-1, 1] (its sigma is ``noise_std / 2``)."""
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0 (on [-1, 1]), got {noise_std}")
    return dinv.physics.GaussianNoise(sigma=noise_std / 2)


def ones_response(operator: Operator, image_shape: Sequence[int], like: Tensor) -> Tensor:
    """``A 1`` for one image of ``image_shape`` (no batch dimension), with ``like``'s dtype and device."""
    return operator(torch.ones(1, *image_shape, dtype=like.dtype, device=like.device))


def measurement_to_unit(operator: LinearOperator, y: Tensor, image_shape: Sequence[int]) -> Tensor:
    """A cse measurement ``y = A x`` (x on [-1, 1]) as the physics' ``y01 = A x01 = (y + A 1) / 2``."""
    return (y + ones_response(operator, image_shape, y)) / 2


def measurement_from_unit(operator: LinearOperator, y01: Tensor, image_shape: Sequence[int]) -> Tensor:
    """The inverse of :func:`measurement_to_unit`: ``y = 2 y01 - A 1``."""
    return 2 * y01 - ones_response(operator, image_shape, y01)


class OperatorPhysics(dinv.physics.LinearPhysics):
    """A cse :class:`LinearOperator` as DeepInverse's ``LinearPhysics`` on [0, 1] images: the same
    matrix (``A``, ``A_adjoint``), with Gaussian noise of std ``noise_std / 2`` (``noise_std`` on [-1, 1])."""

    def __init__(self, operator: LinearOperator, noise_std: float = 0.0) -> None:
        super().__init__(noise_model=noise_model(noise_std))
        self.operator = operator

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return self.operator(x)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        return self.operator.adjoint(y)


class NonlinearOperatorPhysics(dinv.physics.Physics):
    """A cse :class:`Operator` as DeepInverse's ``Physics`` (forward only) on [0, 1] images:
    ``A01(x01) = (A(2 x01 - 1) + 1) / 2``, Gaussian noise of std ``noise_std / 2``."""

    def __init__(self, operator: Operator, noise_std: float = 0.0) -> None:
        super().__init__(noise_model=noise_model(noise_std))
        self.operator = operator

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return (self.operator(2 * x - 1) + 1) / 2


def to_physics(operator: Operator, noise_std: float = 0.0) -> dinv.physics.Physics:
    """``operator`` as DeepInverse physics on [0, 1] images (see the module's conventions):
    :class:`OperatorPhysics` if linear, else :class:`NonlinearOperatorPhysics`. ``noise_std`` is on [-1, 1]."""
    if isinstance(operator, LinearOperator):
        return OperatorPhysics(operator, noise_std)
    if isinstance(operator, Operator):
        return NonlinearOperatorPhysics(operator, noise_std)
    raise TypeError(f"to_physics takes a cse Operator, got {type(operator).__name__}")


def dense_matrix(operator: LinearOperator, image_shape: Sequence[int]) -> tuple[Tensor, tuple[int, ...]]:
    """``A`` as a float64 matrix ``[M, D]`` (D = prod(image_shape)) and the shape of one measurement."""
    size = int(torch.Size(image_shape).numel())
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *image_shape)
    columns = operator(basis)
    return columns.reshape(size, -1).T.contiguous(), tuple(columns.shape[1:])


class SVDPhysics(dinv.physics.DecomposablePhysics):
    """A cse :class:`LinearOperator` as DeepInverse's ``DecomposablePhysics`` (what its DDRM needs), from
    the full SVD of its dense matrix on images of ``image_shape``: ``A = U diag(s) V^T``, the same matrix
    as the operator (up to float32 rounding). Singular values are laid out on the image's shape
    (``mask`` ``[1, *image_shape]``, zero on the null space), as are ``U^T y`` (zero-padded) and
    ``V^T x``. Small images only (a ``D x D`` matrix); needs ``M <= D``. Noise std ``noise_std / 2``."""

    def __init__(self, operator: LinearOperator, image_shape: Sequence[int], noise_std: float = 0.0) -> None:
        matrix, measurement_shape = dense_matrix(operator, image_shape)
        rows, size = matrix.shape
        if rows > size:
            raise ValueError(f"SVDPhysics needs at most as many measurements as pixels, got {rows} > {size}")
        u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
        mask = torch.zeros(size, dtype=torch.float64)
        mask[: len(s)] = s
        super().__init__(mask=mask.float().reshape(1, *image_shape), noise_model=noise_model(noise_std))
        self.image_shape, self.measurement_shape = tuple(image_shape), measurement_shape
        self.register_buffer("left", u.float())  # [M, M]
        self.register_buffer("right", vh.T.float().contiguous())  # V [D, D]

    def V_adjoint(self, x: Tensor) -> Tensor:
        return (x.flatten(1) @ self.right).reshape(x.shape[0], *self.image_shape)

    def V(self, x: Tensor, **kwargs) -> Tensor:
        return (x.flatten(1) @ self.right.T).reshape(x.shape[0], *self.image_shape)

    def U_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        coefficients = y.flatten(1) @ self.left
        padded = coefficients.new_zeros(y.shape[0], self.right.shape[0])
        padded[:, : coefficients.shape[1]] = coefficients
        return padded.reshape(y.shape[0], *self.image_shape)

    def U(self, x: Tensor) -> Tensor:
        rows = self.left.shape[0]
        return (x.flatten(1)[:, :rows] @ self.left.T).reshape(x.shape[0], *self.measurement_shape)


class PhysicsOperator(LinearOperator):
    """DeepInverse's ``LinearPhysics`` as a cse :class:`LinearOperator`: the same matrix (its ``A`` and
    ``A_adjoint``), now applied to [-1, 1] images; its measurements relate by :func:`measurement_from_unit`.
    The physics' noise model is not used (cse keeps noise in :class:`cse.operators.Measurement`)."""

    def __init__(self, physics: dinv.physics.LinearPhysics) -> None:
        super().__init__()
        self.physics = physics

    def describe(self) -> dict:
        return {**super().describe(), "physics": type(self.physics).__name__}

    def forward(self, x: Tensor) -> Tensor:
        return self.physics.A(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.physics.A_adjoint(y)


def from_physics(physics: dinv.physics.LinearPhysics) -> PhysicsOperator:
    """DeepInverse's linear ``physics`` as a cse :class:`LinearOperator` (see :class:`PhysicsOperator`)."""
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise TypeError(f"from_physics takes DeepInverse's LinearPhysics, got {type(physics).__name__}")
    return PhysicsOperator(physics)


class PriorDenoiser(dinv.models.Denoiser):
    """A cse pixel prior's denoiser as DeepInverse's ``Denoiser`` on [0, 1]:
    ``D01(x, sigma) = (prior.denoise(2 x - 1, 2 sigma) + 1) / 2``, ``sigma`` on [0, 1] (a float or ``[B]``)."""

    def __init__(self, prior: Prior) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, x: Tensor, sigma: float | Tensor, *args, **kwargs) -> Tensor:
        if isinstance(sigma, float | int):  # the prior's cached path for one sigma per batch
            return (self.prior.denoise(2 * x - 1, 2 * float(sigma)) + 1) / 2
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).flatten()
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        return (self.prior.denoise(2 * x - 1, 2 * sigma) + 1) / 2


def to_denoiser(prior: Prior) -> PriorDenoiser:
    """``prior`` (pixel space) as a DeepInverse denoiser on [0, 1] (see :class:`PriorDenoiser`)."""
    return PriorDenoiser(prior)
