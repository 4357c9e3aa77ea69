"""Operator contract: ``forward(x) = A(x)`` on images, noise-free and differentiable."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import Tensor, nn


class Operator(nn.Module, ABC):
    """A forward model ``A``. Images are ``[B, C, H, W]`` in [-1, 1]; fixed tensors are buffers."""

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """``A(x)``, sample by sample."""

    def bind(self, seeds: Sequence[int], image_shape: Sequence[int]) -> Operator:
        """This operator fixed for a batch of images (``seeds[i]`` for image i). Operators with
        randomness per image (a nonlinear blur's kernel) draw it here; the others return themselves."""
        return self

    def describe(self) -> dict:
        """The operator's class and the settings that decide ``A`` and ``lift`` (JSON-ready): what a
        CSE records at export, compared with a run's operator before the CSE is used."""
        return {"class": type(self).__name__}

    def lift(self, y: Tensor) -> Tensor:
        """The control image of a measurement: ``y`` brought to the image's shape, on [-1, 1] (the
        input of the CSE, which the paper's research code also feeds on that scale)."""
        return y


class LinearOperator(Operator):
    """A linear ``A`` with its exact adjoint: ``<A x, y> = <x, A^T y>``."""

    @abstractmethod
    def adjoint(self, y: Tensor) -> Tensor:
        """``A^T y``."""


def check_image(x: Tensor, name: str = "image") -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be [B, C, H, W], got shape {tuple(x.shape)}")
