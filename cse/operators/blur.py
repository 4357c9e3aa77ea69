"""Blur by a fixed kernel with reflect padding (the paper's Gaussian deblurring operator)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from cse.digest import tensor_digest
from cse.operators.base import LinearOperator, check_image


def reflect_index(length: int, pad: int, device: torch.device) -> Tensor:
    """Source index of each position of a reflect-padded axis (``F.pad(mode="reflect")``)."""
    if pad >= length:
        raise ValueError(f"reflect padding of {pad} needs an image side larger than {pad}, got {length}")
    positions = torch.arange(-pad, length + pad, device=device).abs()  # mirror the start ...
    return torch.where(positions >= length, 2 * (length - 1) - positions, positions)  # ... and the end


class Convolution(LinearOperator):
    """Per-channel correlation with ``kernel`` ``[k_h, k_w]`` (odd sizes), reflect-padded to keep the size;
    or with one kernel per image, ``[B, k_h, k_w]`` (a batch of measurements each blurred by its own).

    Padding is the linear map ``P`` (gather by :func:`reflect_index`), so the adjoint is exact:
    ``A^T = P^T C^T`` with ``C^T`` a transposed convolution and ``P^T`` a scatter-add.
    """

    def __init__(self, kernel: Tensor) -> None:
        super().__init__()
        kernel = torch.as_tensor(kernel, dtype=torch.float32)
        if kernel.ndim not in (2, 3) or kernel.shape[-2] % 2 == 0 or kernel.shape[-1] % 2 == 0:
            raise ValueError(f"kernel must be [k_h, k_w] or [B, k_h, k_w] with odd sides, got {tuple(kernel.shape)}")
        self.register_buffer("kernel", kernel)

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, digest={tensor_digest(self.kernel)}"

    def describe(self) -> dict:
        return {**super().describe(), "kernel": list(self.kernel.shape), "digest": tensor_digest(self.kernel)}

    def _weight(self, like: Tensor) -> Tensor:
        """Grouped-convolution weights: one kernel per channel, or per channel of each image."""
        channels = like.shape[1]
        if self.kernel.ndim == 2:
            return self.kernel.to(like)[None, None].expand(channels, 1, -1, -1)
        if self.kernel.shape[0] != like.shape[0]:
            raise ValueError(f"{self.kernel.shape[0]} kernels for a batch of {like.shape[0]} images")
        return self.kernel.to(like).repeat_interleave(channels, 0)[:, None]

    def _grouped(self, conv, x: Tensor) -> Tensor:
        """``conv(x, weight, groups)`` per channel, each image with its own kernel when there are several."""
        if self.kernel.ndim == 2:
            return conv(x, self._weight(x), groups=x.shape[1])
        folded = x.reshape(1, -1, *x.shape[-2:])  # [1, B C, H, W]: the batch folded into the groups
        out = conv(folded, self._weight(x), groups=folded.shape[1])
        return out.reshape(*x.shape[:2], *out.shape[-2:])

    def _pad_indices(self, like: Tensor) -> tuple[Tensor, Tensor]:
        pad_h, pad_w = self.kernel.shape[-2] // 2, self.kernel.shape[-1] // 2
        return reflect_index(like.shape[-2], pad_h, like.device), reflect_index(like.shape[-1], pad_w, like.device)

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        rows, cols = self._pad_indices(x)
        padded = x.index_select(-2, rows).index_select(-1, cols)
        return self._grouped(F.conv2d, padded)

    def adjoint(self, y: Tensor) -> Tensor:
        check_image(y, "measurement")
        rows, cols = self._pad_indices(y)
        padded = self._grouped(F.conv_transpose2d, y)
        folded = y.new_zeros(*y.shape[:-1], padded.shape[-1]).index_add(-2, rows, padded)
        return torch.zeros_like(y).index_add(-1, cols, folded)

    def lift(self, y: Tensor) -> Tensor:
        """The blurred image itself."""
        return y


def gaussian_kernel(kernel_size: int, std: float, truncate: float = 4.0) -> Tensor:
    """Normalised separable Gaussian, as ``scipy.ndimage.gaussian_filter`` of a centred delta.

    Taps beyond ``truncate * std`` are zero there, so the kernel is trimmed to that radius
    (at most ``kernel_size // 2``); reflect-padding by the trimmed radius gives the same result.
    """
    radius = min(kernel_size // 2, int(truncate * std + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    profile = torch.exp(-0.5 * (offsets / std) ** 2)
    profile /= profile.sum()
    return torch.outer(profile, profile).float()


class GaussianBlur(Convolution):
    """The paper's Gaussian blur: a ``kernel_size`` kernel of standard deviation ``std``, reflect padding."""

    def __init__(self, kernel_size: int = 61, std: float = 3.0) -> None:
        if kernel_size % 2 == 0 or std <= 0 or math.isnan(std):
            raise ValueError(f"GaussianBlur needs an odd kernel_size and std > 0, got {kernel_size}, {std}")
        super().__init__(gaussian_kernel(kernel_size, std))
        self.kernel_size, self.std = kernel_size, std

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, std={self.std}"

    def describe(self) -> dict:
        return {"class": type(self).__name__, "kernel_size": self.kernel_size, "std": self.std}
