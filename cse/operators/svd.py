"""Singular value decompositions ``A = U S V^T`` of the linear operators that have a cheap one.

The shared base of the spectral methods (DDRM's eqs. 7-8, closed-form proximal steps, PiGDM's
``(r^2 A A^T + s^2 I)^{-1}``). Spectral coefficients are tensors shaped like the image: ``vt(x)``
and ``v(c)`` map between an image and its coefficients, ``ut(y)`` gives a measurement's
coefficients on the same grid (zero where ``s = 0``) and ``u(c)`` maps them back to a measurement.

- ``SuperResolution``: MATLAB's bicubic resize is ``R_h X R_w^T``, so ``A = R_h (x) R_w``: the SVD of
  each axis' matrix, per channel (``s_ij = s_h,i s_w,j``, zero past the measured sides).
- ``Convolution`` with a separable (rank-one) kernel: each axis is a square 1-D correlation with
  reflect padding; built as a matrix and decomposed the same way.
- ``BoxInpainting``: ``U = V = I`` and ``s`` the mask.
- ``MatrixOperator``: ``torch.linalg.svd`` of ``A``.

Other operators have none (:func:`svd_of` says so); :func:`solve_prox` then falls back to
conjugate gradients on ``A^T A + rho I``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache

import torch
from torch import Tensor

from cse.digest import tensor_digest
from cse.operators.base import LinearOperator, Operator
from cse.operators.blur import Convolution, reflect_index
from cse.operators.linear import BoxInpainting, MatrixOperator, SuperResolution
from cse.operators.resize import resize_matrix


class SVD(ABC):
    """``A = U S V^T`` with coefficients shaped like the image (see the module's docstring)."""

    @abstractmethod
    def vt(self, x: Tensor) -> Tensor:
        """``V^T x``, shaped like ``x``."""

    @abstractmethod
    def v(self, c: Tensor) -> Tensor:
        """``V c``, shaped like ``c``."""

    @abstractmethod
    def ut(self, y: Tensor, like: Tensor) -> Tensor:
        """``U^T y`` on the grid of the coefficients of images like ``like`` (zero where ``s = 0``)."""

    @abstractmethod
    def u(self, c: Tensor) -> Tensor:
        """``U c`` (only the entries where ``s > 0`` count): a measurement."""

    @abstractmethod
    def singulars(self, like: Tensor) -> Tensor:
        """``s``, broadcastable against the coefficients of images like ``like`` (with its dtype)."""

    def forward(self, x: Tensor) -> Tensor:
        """``A x = U S V^T x``."""
        return self.u(self.singulars(x) * self.vt(x))

    def adjoint(self, y: Tensor, like: Tensor) -> Tensor:
        """``A^T y = V S U^T y`` for images shaped like ``like``."""
        return self.v(self.singulars(like) * self.ut(y, like))


def axis_svd(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Full SVD of one axis' ``[m, n]`` matrix (``m <= n``): ``U [m, m]``, ``s [n]`` (zero-padded), ``V [n, n]``."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
    return u, torch.cat([s, s.new_zeros(matrix.shape[1] - s.shape[0])]), vh.T


class SeparableSVD(SVD):
    """``Y = M_h X M_w^T`` per channel, from the SVDs of the two axis matrices (``[m, n]``, ``m <= n``)."""

    def __init__(self, rows: Tensor, cols: Tensor) -> None:
        (self.u_h, self.s_h, self.v_h), (self.u_w, self.s_w, self.v_w) = axis_svd(rows), axis_svd(cols)
        self.m_h, self.m_w = rows.shape[0], cols.shape[0]

    def _to(self, t: Tensor, like: Tensor) -> Tensor:
        return t.to(device=like.device, dtype=like.dtype)

    def vt(self, x: Tensor) -> Tensor:
        return self._to(self.v_h, x).T @ x @ self._to(self.v_w, x)

    def v(self, c: Tensor) -> Tensor:
        return self._to(self.v_h, c) @ c @ self._to(self.v_w, c).T

    def ut(self, y: Tensor, like: Tensor) -> Tensor:
        inner = self._to(self.u_h, y).T @ y @ self._to(self.u_w, y)
        n_h, n_w = self.v_h.shape[0], self.v_w.shape[0]
        return torch.nn.functional.pad(inner, (0, n_w - self.m_w, 0, n_h - self.m_h))

    def u(self, c: Tensor) -> Tensor:
        block = c[..., : self.m_h, : self.m_w]
        return self._to(self.u_h, c) @ block @ self._to(self.u_w, c).T

    def singulars(self, like: Tensor) -> Tensor:
        return self._to(torch.outer(self.s_h, self.s_w), like)


class MaskSVD(SVD):
    """A diagonal 0/1 mask: ``U = V = I``, ``s`` the mask."""

    def __init__(self, mask: Tensor) -> None:
        self.mask = mask

    def vt(self, x: Tensor) -> Tensor:
        return x

    def v(self, c: Tensor) -> Tensor:
        return c

    def ut(self, y: Tensor, like: Tensor) -> Tensor:
        return y * self.mask.to(y)

    def u(self, c: Tensor) -> Tensor:
        return c * self.mask.to(c)

    def singulars(self, like: Tensor) -> Tensor:
        return self.mask.to(like)


class DenseSVD(SVD):
    """``A [M, D]`` on flattened samples: coefficients have the sample's shape, ``D`` values."""

    def __init__(self, A: Tensor) -> None:
        self.U, s, vh = torch.linalg.svd(A, full_matrices=True)
        self.V, self.M, self.D = vh.T, A.shape[0], A.shape[1]
        self.s = torch.zeros(self.D, dtype=A.dtype, device=A.device)
        self.s[: s.shape[0]] = s

    def vt(self, x: Tensor) -> Tensor:
        return (x.reshape(x.shape[0], -1) @ self.V.to(x)).reshape(x.shape)

    def v(self, c: Tensor) -> Tensor:
        return (c.reshape(c.shape[0], -1) @ self.V.to(c).T).reshape(c.shape)

    def ut(self, y: Tensor, like: Tensor) -> Tensor:
        coeffs = y @ self.U.to(y)[:, : min(self.M, self.D)]
        padded = torch.nn.functional.pad(coeffs, (0, self.D - coeffs.shape[1])) * (self.s.to(y) > 0)
        return padded.reshape(like.shape)

    def u(self, c: Tensor) -> Tensor:
        flat = c.reshape(c.shape[0], -1)[:, : min(self.M, self.D)]
        return flat @ self.U.to(c)[:, : flat.shape[1]].T

    def singulars(self, like: Tensor) -> Tensor:
        return self.s.to(like).reshape(like.shape[1:])


def kernel_factors(kernel: Tensor, tolerance: float = 1e-5) -> tuple[Tensor, Tensor]:
    """``kernel = outer(a, b)`` for a rank-one kernel (a Gaussian); a TypeError otherwise."""
    u, s, vh = torch.linalg.svd(kernel.double())
    if s.shape[0] > 1 and s[1] > tolerance * s[0]:
        raise TypeError(f"the kernel is not separable (second singular value {s[1] / s[0]:.2g} of the first): no SVD")
    a, b = u[:, 0] * s[0].sqrt(), vh[0] * s[0].sqrt()
    return (a, b) if a.sum() >= 0 else (-a, -b)


def reflect_correlation_matrix(taps: Tensor, length: int) -> Tensor:
    """``[length, length]`` matrix of a 1-D correlation with ``taps`` (odd) after reflect padding."""
    pad = taps.shape[0] // 2
    sources = reflect_index(length, pad, taps.device)  # [length + 2 pad]
    matrix = torch.zeros(length, length, dtype=taps.dtype, device=taps.device)
    rows = torch.arange(length, device=taps.device)
    for k in range(taps.shape[0]):
        matrix.index_put_((rows, sources[rows + k]), taps[k].expand(length), accumulate=True)
    return matrix


@lru_cache(maxsize=32)
def _resize_svd(height: int, width: int, factor: int) -> SeparableSVD:
    rows = torch.from_numpy(resize_matrix(height, height // factor))
    cols = torch.from_numpy(resize_matrix(width, width // factor))
    return SeparableSVD(rows, cols)


_CONV_CACHE: dict[tuple[str, int, int], SeparableSVD] = {}


def _convolution_svd(operator: Convolution, height: int, width: int) -> SeparableSVD:
    key = (tensor_digest(operator.kernel), height, width)
    if key not in _CONV_CACHE:
        a, b = kernel_factors(operator.kernel.detach().cpu())
        _CONV_CACHE[key] = SeparableSVD(reflect_correlation_matrix(a, height), reflect_correlation_matrix(b, width))
    return _CONV_CACHE[key]


_DENSE_CACHE: dict[str, DenseSVD] = {}


def _dense_svd(operator: MatrixOperator) -> DenseSVD:
    key = tensor_digest(operator.A)
    if key not in _DENSE_CACHE:
        _DENSE_CACHE[key] = DenseSVD(operator.A.detach().to(torch.float64))
    return _DENSE_CACHE[key]


RANK_FLOOR = 1e-3
"""Singular values below ``RANK_FLOOR`` times the largest count as zero where a spectral method
divides by them (``S^+``). The 13-px Gaussian blur on 16 px images has singular values down to
1.5e-9, so ``S^+ U^T y`` of a noise-free float32 measurement amplifies its rounding (about 1e-7 a
coefficient) to hundreds. DDRM's official code zeroes a separable blur's 1-D singular values below
3e-2, their products below about 1e-3; super-resolution and masks have none so small."""


def numerical_singulars(s: Tensor) -> Tensor:
    """``s`` with the values below :data:`RANK_FLOOR` of the largest set to 0 (the directions a
    spectral method treats as measured are the rest)."""
    return torch.where(s >= RANK_FLOOR * s.abs().max(), s, torch.zeros_like(s))


def spectral_measurement(svd: SVD, y: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """``yb = S^+ U^T y`` (zero where ``s = 0``) and ``s``, on the coefficients' grid of ``like``;
    singular values below the numerical rank's floor count as 0 (:data:`RANK_FLOOR`). ``V yb`` is
    ``A^+ y``."""
    s = numerical_singulars(svd.singulars(like))
    observed = s > 0
    yb = torch.where(observed, svd.ut(y, like) / torch.where(observed, s, torch.ones_like(s)), 0.0)
    return yb, s


def svd_of(operator: Operator, like: Tensor) -> SVD:
    """The SVD of ``operator`` on images shaped like ``like`` (made once per operator and size);
    a TypeError naming the operator when it has none here."""
    from cse.operators.measured import Clipped, MaskInpainting

    if isinstance(operator, Clipped):  # its linear part (see Clipped)
        return svd_of(operator.operator, like)
    if isinstance(operator, MaskInpainting):
        return MaskSVD(operator.mask)
    if isinstance(operator, SuperResolution):
        return _resize_svd(like.shape[-2], like.shape[-1], operator.factor)
    if isinstance(operator, Convolution):
        return _convolution_svd(operator, like.shape[-2], like.shape[-1])
    if isinstance(operator, BoxInpainting):
        return MaskSVD(operator.mask(like))
    if isinstance(operator, MatrixOperator):
        return _dense_svd(operator)
    has = "SuperResolution, Convolution, BoxInpainting and MatrixOperator have one"
    raise TypeError(f"{type(operator).__name__} has no SVD here ({has})")


def has_svd(operator: Operator | type | None) -> bool:
    """Whether :func:`svd_of` decomposes operators of this class (a Convolution's kernel must also be separable)."""
    cls = operator if isinstance(operator, type) else type(operator)
    return issubclass(cls, SuperResolution | Convolution | BoxInpainting | MatrixOperator)


def per_sample(rho: float | Tensor, like: Tensor) -> Tensor:
    """``rho`` (a float or ``[B]``) broadcastable against ``like``."""
    rho = torch.as_tensor(rho, dtype=like.dtype, device=like.device)
    return rho.reshape(-1, *[1] * (like.ndim - 1)) if rho.ndim else rho


def solve_prox(operator: LinearOperator, rhs: Tensor, rho: float | Tensor, cg_steps: int = 50) -> Tensor:
    """``(A^T A + rho I)^{-1} rhs`` (``rho`` > 0, a float or one per sample): through the SVD,
    ``V diag(1 / (s^2 + rho)) V^T rhs``, where there is one; else ``cg_steps`` of conjugate gradients."""
    if has_svd(operator):
        try:
            svd = svd_of(operator, rhs)
        except TypeError:  # a non-separable kernel
            pass
        else:
            return svd.v(svd.vt(rhs) / (svd.singulars(rhs) ** 2 + per_sample(rho, rhs)))
    return conjugate_gradients(lambda x: operator.adjoint(operator(x)) + per_sample(rho, x) * x, rhs, cg_steps)


def conjugate_gradients(apply, rhs: Tensor, steps: int) -> Tensor:
    """``apply(x) = rhs`` for a symmetric positive definite ``apply``, per sample (each sample's own
    step lengths, so a sample's solution does not depend on its batch)."""

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return per_sample((a * b).flatten(1).sum(1), a)

    x = torch.zeros_like(rhs)
    r, p = rhs.clone(), rhs.clone()
    rr = dot(r, r)
    for _ in range(steps):
        ap = apply(p)
        alpha = rr / dot(p, ap).clamp_min(torch.finfo(rhs.dtype).tiny)
        x, r = x + alpha * p, r - alpha * ap
        rr_next = dot(r, r)
        p = r + (rr_next / rr.clamp_min(torch.finfo(rhs.dtype).tiny)) * p
        rr = rr_next
    return x
