"""MATLAB ``imresize`` (bicubic, antialiased when shrinking) as exact separable matrices.

This is the resizer of the DPS/paper super-resolution operator. Writing it as
``Y = R_h X R_w^T`` makes the adjoint exact: ``X = R_h^T Y R_w``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    near = (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def resize_matrix(in_length: int, out_length: int) -> np.ndarray:
    """``[out_length, in_length]`` float64 matrix of MATLAB's bicubic ``imresize`` along one axis.

    Shrinking widens the kernel by 1/scale (antialiasing); out-of-range taps fold back
    symmetrically (edge sample repeated), as MATLAB does; every row sums to 1.
    """
    scale = out_length / in_length
    stretch = min(scale, 1.0)
    kernel_width = 4.0 / stretch
    centres = (np.arange(out_length) + 0.5) / scale - 0.5  # 0-based input coordinate of each output
    left = np.floor(centres - kernel_width / 2)
    taps = left[:, None] + np.arange(math.ceil(kernel_width) + 2)[None, :]
    weights = stretch * cubic(stretch * (centres[:, None] - taps))
    weights /= weights.sum(1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    taps = mirror[taps.astype(np.int64) % len(mirror)]
    matrix = np.zeros((out_length, in_length))
    np.add.at(matrix, (np.repeat(np.arange(out_length), taps.shape[1]), taps.ravel()), weights.ravel())
    return matrix


def resize_matrices(height: int, width: int, out_height: int, out_width: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column matrices for ``[.., height, width] -> [.., out_height, out_width]`` with
    ``like``'s device and dtype (made once per size, dtype and device: not to be modified)."""
    return _resize_matrices(height, width, out_height, out_width, like.dtype, like.device)


@lru_cache(maxsize=64)
def _resize_matrices(
    height: int, width: int, out_height: int, out_width: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    with torch.inference_mode(False):  # ordinary tensors, usable by autograd wherever first made
        rows = torch.from_numpy(resize_matrix(height, out_height)).to(device=device, dtype=dtype)
        cols = torch.from_numpy(resize_matrix(width, out_width)).to(device=device, dtype=dtype)
    return rows, cols


def imresize(x: Tensor, out_height: int, out_width: int) -> Tensor:
    """Bicubic MATLAB-style resize of ``[..., H, W]``."""
    rows, cols = resize_matrices(x.shape[-2], x.shape[-1], out_height, out_width, x)
    return rows @ x @ cols.T
