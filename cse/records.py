"""The typed records passed between the project's parts: a batch of images from the data, and what
a restoration produces per image, from the predict step to the writer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

from torch import Tensor


class Batch(TypedDict):
    """What every data loader of the project yields."""

    key: list[str]  # the image's key (relative path or shard key)
    sample_id: list[str]  # the key, or ``key#r`` for the r-th repetition of an image in an epoch
    image: Tensor  # [B, 3, H, W] on [-1, 1]
    label: Tensor  # [B] int64 (-1 where the data module reads no labels)
    skipped: list[tuple[str, str]]  # (key, reason) of this batch's samples that could not be used


RESIDUAL_WARNING = 10.0
"""A restoration whose ``||A(x) - y||`` exceeds this many times ``||y||`` is flagged (warning, summary)."""


def is_empty(batch: Batch) -> bool:
    """Whether every sample of the batch was unusable (each is in ``skipped``, and was warned about)."""
    return not batch["key"]


class ImageMetrics(TypedDict):
    """One line of ``metrics.jsonl``: quality, consistency and cost of one restored image."""

    key: str
    psnr: NotRequired[float]  # dB, on [0, 1]; where there is a clean reference
    ssim: NotRequired[float]
    residual: float  # ||A(x_hat) - y||, the measurement's own scale
    residual_relative: float  # ||A(x_hat) - y|| / ||y||
    seconds: float  # sampling time per image (its batch's time / batch size)
    network_evaluations: float  # network forward passes per image
    network_gradients: float  # of which back-propagated through
    decoder_passes: float  # a latent prior's decoder forward passes per image (0 on a pixel prior)
    decoder_gradients: float  # of which back-propagated through
    peak_memory_mb: float | None  # peak CUDA memory of the batch (None on CPU)
    batch_size: int
    noise_std: float  # of the measurement, on [-1, 1]: the task's, given, or estimated ("auto")
    diversity: NotRequired[float]  # mean per-pixel std over samples_per_image samples, on [-1, 1]
    lpips: NotRequired[float]  # added by the writer from the written PNGs


@dataclass
class Restoration:
    """A restored batch, every image on [-1, 1] and every tensor on the CPU: a batch ``[B, ...]``, or
    a list of ``B`` images of different sizes (measurements as given, restored by size).

    ``source`` is the clean image (None where there is none: a measurement as given without a
    reference); ``measurement`` is image-shaped for image operators (and written as PNGs then);
    ``control`` is the CSE's control image ``measurement.lift(y)``; ``diversity`` the per-pixel std
    maps ``[B, H, W]`` when several samples per image were drawn.
    """

    keys: list[str]
    source: Sequence[Tensor | None]
    measurement: Sequence[Tensor]
    control: Sequence[Tensor]
    recon: Sequence[Tensor]
    metrics: list[ImageMetrics]
    diversity: Sequence[Tensor] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) left out of this batch

    @classmethod
    def concatenate(cls, parts: list[Restoration], skipped: list[tuple[str, str]]) -> Restoration:
        """The restorations of several batches as one, their images as lists."""
        joined = lambda name: [image for part in parts for image in getattr(part, name)]  # noqa: E731
        maps = joined("diversity") if parts and all(p.diversity is not None for p in parts) else None
        images = {name: joined(name) for name in ("source", "measurement", "control", "recon")}
        return cls(joined("keys"), **images, metrics=joined("metrics"), diversity=maps, skipped=skipped)


@dataclass
class Samples:
    """Generated images (no measurement): ``images`` ``[B, C, H, W]`` on [-1, 1], one per key."""

    keys: list[str]
    images: Tensor
