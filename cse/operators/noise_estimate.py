"""Estimating a measurement's Gaussian noise std from the measurement alone (``noise: auto``).

Two standard estimators, both on the [-1, 1] scale of the images they are given:

- :func:`immerkaer_sigma`: J. Immerkær, "Fast Noise Variance Estimation", CVIU 64(2), 1996:
  ``sigma = sqrt(pi / 2) / (6 (W - 2)(H - 2)) * sum |I * N|`` with the Laplacian-difference mask
  ``N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``, which cancels locally planar image content and
  has gain 6 on the mean absolute value of white noise.
- :func:`wavelet_mad_sigma`: D. Donoho and I. Johnstone, "Ideal spatial adaptation by wavelet
  shrinkage", Biometrika 81(3), 1994: the median absolute value of the finest diagonal (HH) wavelet
  coefficients divided by 0.6745 (here Haar's, orthonormal, so white noise keeps its std).

Both read image structure as noise where the image is not smooth at the pixel scale, so they
overestimate on small, sharp images (the digits): ``scripts/noise_estimates.py`` measures their
accuracy on the digits operators at known noise stds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IMMERKAER_MASK = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def immerkaer_sigma(y: Tensor) -> Tensor:
    """Noise std of each image of ``y`` ``[B, C, H, W]`` (H, W >= 3), averaged over channels: ``[B]``."""
    if min(y.shape[-2:]) < 3:
        raise ValueError(f"noise estimation needs images of at least 3x3 pixels, got {tuple(y.shape[-2:])}")
    channels = y.shape[1]
    mask = IMMERKAER_MASK.to(y).expand(channels, 1, 3, 3)
    response = F.conv2d(y, mask, groups=channels).abs()  # [B, C, H - 2, W - 2]
    return math.sqrt(math.pi / 2) / 6 * response.flatten(1).mean(1)


def wavelet_mad_sigma(y: Tensor) -> Tensor:
    """Noise std of each image of ``y`` ``[B, C, H, W]`` (H, W >= 2) from its Haar HH coefficients: ``[B]``."""
    if min(y.shape[-2:]) < 2:
        raise ValueError(f"noise estimation needs images of at least 2x2 pixels, got {tuple(y.shape[-2:])}")
    h, w = y.shape[-2] // 2 * 2, y.shape[-1] // 2 * 2
    blocks = y[..., :h, :w]
    a, b = blocks[..., 0::2, 0::2], blocks[..., 0::2, 1::2]
    c, d = blocks[..., 1::2, 0::2], blocks[..., 1::2, 1::2]
    diagonal = (a - b - c + d) / 2
    return diagonal.flatten(1).abs().median(dim=1).values / 0.6745


ESTIMATORS = {"immerkaer": immerkaer_sigma, "wavelet_mad": wavelet_mad_sigma}
