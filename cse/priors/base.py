"""The Prior contract: a denoiser in VE form plus the maps to image space.

A CSE (a ControlNet conditioned on the lifted measurement) is bound to its prior once, before
sampling, with :meth:`Prior.conditioned` (as k-diffusion's ``make_cond_model_fn`` wraps a denoiser):
samplers only ever call ``denoise(u, sigma)`` and never know whether a CSE is there.
"""

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
    def denoise(self, u: Tensor, sigma: Tensor | float) -> Tensor:
        """``E[x0 | u]`` for ``u`` ``[B, *sample_shape]`` at noise level ``sigma`` (scalar or ``[B]``).

        Differentiable in ``u``. A prior with a CSE attached denoises without it here (the CSE
        off); :meth:`conditioned` gives the prior with the CSE on.
        """

    @property
    def has_cse(self) -> bool:
        """Whether a CSE is attached, i.e. whether :meth:`conditioned` changes anything."""
        return False

    def conditioned(self, control: Tensor) -> Prior:
        """This prior with its CSE's control image ``control`` (``measurement.lift(y)``, one per
        sample) bound, so that ``denoise(u, sigma)`` is the conditional denoiser; the prior itself
        when it has no CSE."""
        return self

    def check_measurement(self, measurement: dict) -> None:
        """Refuse a measurement (its ``describe()``) that an attached CSE was not trained for.
        Priors without a CSE take any."""

    def state_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of one diffusion state for images of ``image_shape`` (``[..., H, W]``)."""
        return self.sample_shape

    @property
    def size_multiple(self) -> int | None:
        """What an image's sides must be multiples of (the networks' down-sampling, times the VAE
        factor); None: the prior takes images of ``sample_shape`` only."""
        return None

    def encode(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        """Images to the prior's space: the encoder's mean, or with standard-normal ``noise`` (shaped
        like the result) a draw from its posterior. The identity for pixel priors."""
        return images

    def decode(self, latents: Tensor) -> Tensor:
        return latents

    def describe(self) -> dict:
        """What identifies this prior (for records of what produced a result)."""
        return {"class": type(self).__name__}


class PriorView(Prior):
    """``prior`` seen through a wrapper that changes one thing (what it counts, what it is
    conditioned on): everything else is forwarded."""

    def __init__(self, prior: Prior) -> None:
        super().__init__()
        self.prior = prior

    @property
    def schedule(self) -> DiscreteSchedule:
        return self.prior.schedule

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.prior.sample_shape

    def denoise(self, u: Tensor, sigma: Tensor | float) -> Tensor:
        return self.prior.denoise(u, sigma)

    def state_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        return self.prior.state_shape(image_shape)

    @property
    def size_multiple(self) -> int | None:
        return self.prior.size_multiple

    def encode(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.prior.encode(images, noise)

    def decode(self, latents: Tensor) -> Tensor:
        return self.prior.decode(latents)

    def check_measurement(self, measurement: dict) -> None:
        self.prior.check_measurement(measurement)

    def describe(self) -> dict:
        return self.prior.describe()


def pixel_prior(prior: Prior) -> bool:
    """Whether ``prior`` (seen through any wrappers) diffuses images themselves, not latents."""
    while hasattr(prior, "prior") and isinstance(prior.prior, Prior):
        prior = prior.prior
    return getattr(prior, "vae", None) is None
