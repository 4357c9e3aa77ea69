"""Linear operators: a dense matrix (exact tier), x`factor` super-resolution, box inpainting."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from cse.digest import tensor_digest
from cse.operators.base import LinearOperator, check_image
from cse.operators.resize import imresize, resize_matrices


class MatrixOperator(LinearOperator):
    """``A x`` for a dense ``A`` ``[M, D]`` acting on flattened samples ``[B, ...]`` -> ``[B, M]``."""

    def __init__(self, A: Tensor) -> None:
        super().__init__()
        A = torch.as_tensor(A)
        if A.ndim != 2:
            raise ValueError(f"A must be [M, D], got shape {tuple(A.shape)}")
        self.register_buffer("A", A)
        self.register_buffer("A_pinv", torch.linalg.pinv(A))

    @classmethod
    def from_rows(cls, rows: list[list[float]]) -> MatrixOperator:
        """From its rows, as a config gives them (float64)."""
        return cls(torch.tensor(rows, dtype=torch.float64))

    def extra_repr(self) -> str:
        if self.A.numel() <= 16:
            return f"A={self.A.tolist()}"
        return f"A={tuple(self.A.shape)}, digest={tensor_digest(self.A)}"

    def describe(self) -> dict:
        return {**super().describe(), "A": list(self.A.shape), "digest": tensor_digest(self.A)}

    def _check(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.A.shape[1]:
            raise ValueError(f"MatrixOperator expects {self.A.shape[1]} values per sample, got shape {tuple(x.shape)}")
        return flat

    def forward(self, x: Tensor) -> Tensor:
        return self._check(x) @ self.A.to(x).T

    def adjoint(self, y: Tensor) -> Tensor:
        return y @ self.A.to(y)

    def lift(self, y: Tensor) -> Tensor:
        """The least-squares estimate ``A^+ y`` ``[B, D]``."""
        return y @ self.A_pinv.to(y).T


class SuperResolution(LinearOperator):
    """Down-sampling by ``factor`` with MATLAB's antialiased bicubic ``imresize`` (the paper's SR).

    ``lift`` chooses the CSE's control image, the measurement brought back to the image size:
    ``"bicubic"``: torch's bicubic up-sampling, unclamped, as the paper's research code makes it
    (the published CSE weights expect this); ``"matlab"``: MATLAB-style bicubic ``imresize``,
    clamped to [-1, 1]. A trained CSE must be used with the lift it was trained with.
    """

    def __init__(self, factor: int = 8, lift: Literal["bicubic", "matlab"] = "bicubic") -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        if lift not in ("bicubic", "matlab"):
            raise ValueError(f"lift must be 'bicubic' or 'matlab', got {lift!r}")
        self.factor, self.lift_mode = factor, lift

    def extra_repr(self) -> str:
        return f"factor={self.factor}, lift={self.lift_mode!r}"

    def describe(self) -> dict:
        return {**super().describe(), "factor": self.factor, "lift": self.lift_mode}

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        height, width = x.shape[-2:]
        if height % self.factor or width % self.factor:
            raise ValueError(f"SuperResolution(factor={self.factor}) needs sides it divides, got {height}x{width}")
        return imresize(x, height // self.factor, width // self.factor)

    def adjoint(self, y: Tensor) -> Tensor:
        check_image(y, "measurement")
        height, width = y.shape[-2:]
        rows, cols = resize_matrices(height * self.factor, width * self.factor, height, width, y)
        return rows.T @ y @ cols

    def lift(self, y: Tensor) -> Tensor:
        """Bicubic up-sampling back to the image size (``lift`` of the constructor says which)."""
        check_image(y, "measurement")
        if self.lift_mode == "bicubic":
            return F.interpolate(y, scale_factor=self.factor, mode="bicubic")
        return imresize(y, y.shape[-2] * self.factor, y.shape[-1] * self.factor).clamp(-1, 1)


class BoxInpainting(LinearOperator):
    """Zeroes a centred box: ``size`` x ``size``, or ``(height, width)`` (the paper: 128 px on 512 px)."""

    def __init__(self, size: int | tuple[int, int] = 128) -> None:
        super().__init__()
        box = (size, size) if isinstance(size, int) else tuple(size)
        if len(box) != 2 or min(box) < 1:
            raise ValueError(f"size must be a positive int or (height, width), got {size}")
        self.size = box

    def extra_repr(self) -> str:
        return f"size={self.size}"

    def describe(self) -> dict:
        return {**super().describe(), "size": list(self.size)}

    def mask(self, like: Tensor) -> Tensor:
        """``[H, W]`` mask: 1 where observed, 0 inside the box."""
        height, width = like.shape[-2:]
        box_h, box_w = self.size
        if box_h > height or box_w > width:
            raise ValueError(f"BoxInpainting(size={box_h}x{box_w}) does not fit a {height}x{width} image")
        top, left = (height - box_h) // 2, (width - box_w) // 2
        mask = torch.ones(height, width, dtype=like.dtype, device=like.device)
        mask[top : top + box_h, left : left + box_w] = 0
        return mask

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        return x * self.mask(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.forward(y)

    def lift(self, y: Tensor) -> Tensor:
        return self.forward(y)
