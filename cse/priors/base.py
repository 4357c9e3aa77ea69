"""The Prior contract: a denoiser in VE form plus the maps to image space."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch import Tensor, nn

from cse.priors.schedule import DiscreteSchedule


class Prior(nn.Module, ABC):
    """A diffusion prior seen as ``denoise(u, sigma) = E[x0 | u]`` for ``u = x0 + sigma * eps``.

    ``x0`` lives in the prior's own space (latents for a latent prior); ``decode`` maps it to
    images in [-1, 1] and ``encode`` back. Both are the identity for pixel-space priors.
    """

    schedule: DiscreteSchedule

    @property
    @abstractmethod
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample of ``x0`` (without the batch dimension)."""

    @abstractmethod
    def denoise(self, u: Tensor, sigma: Tensor | float, control: Tensor | None = None) -> Tensor:
        """``E[x0 | u]`` for ``u`` ``[B, *sample_shape]`` at noise level ``sigma`` (scalar or ``[B]``).

        Differentiable in ``u``. ``control`` is the CSE's control image (``measurement.lift(y)``),
        used only by priors with a ControlNet attached.
        """

    def state_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of one diffusion state for images of ``image_shape`` (``[..., H, W]``)."""
        return self.sample_shape

    def encode(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        """Images to the prior's space: the encoder's mean, or with standard-normal ``noise`` (shaped
        like the result) a draw from its posterior. The identity for pixel priors."""
        return images

    def decode(self, latents: Tensor) -> Tensor:
        return latents

    def describe(self) -> dict:
        """What identifies this prior (for records of what produced a result)."""
        return {"class": type(self).__name__}
