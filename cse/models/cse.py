"""The CSE: a ControlNet copied from the prior's UNet, conditioned on the lifted measurement.

Its residuals, added to the frozen UNet, turn the unconditional score into an estimate of the
conditional score of p(x_t | y) (the paper's Sec. 4); it is trained with the prior's own loss.
"""

from __future__ import annotations

import math

from diffusers import ControlNetModel
from torch import Tensor

from cse.operators.base import Operator
from cse.priors.diffusers_prior import DiffusersPrior

SD_CONDITIONING_CHANNELS = (16, 32, 96, 256)  # ControlNet's default, for a VAE that shrinks 8x


def build_controlnet(prior: DiffusersPrior, conditioning_channels: int = 3) -> ControlNetModel:
    """``ControlNetModel.from_unet`` with the prior's weights, and a conditioning embedding that
    takes image-sized ``[B, conditioning_channels, H, W]`` inputs down to the network's resolution
    (one stride-2 stage per factor of 2 of the VAE; none for pixel priors)."""
    stages = int(math.log2(prior.latent_factor))
    channels = SD_CONDITIONING_CHANNELS[: stages + 1] if stages < len(SD_CONDITIONING_CHANNELS) else None
    if channels is None:
        raise ValueError(f"no ControlNet conditioning embedding for a latent factor of {prior.latent_factor}")
    return ControlNetModel.from_unet(
        prior.unet, conditioning_embedding_out_channels=channels, conditioning_channels=conditioning_channels
    )


def conditioning(operator: Operator, y: Tensor) -> Tensor:
    """The CSE's input for a measurement: ``lift(y)`` as an image in [-1, 1] (training and use)."""
    return operator.lift(y).clamp(-1, 1)
