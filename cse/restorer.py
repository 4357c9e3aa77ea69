"""Restore measurements from Python, as ``python -m cse predict --config ... --config configs/measured.yaml``
does from the command line (in the spirit of a diffusers pipeline)::

    from PIL import Image
    from cse import Restorer

    restorer = Restorer.from_configs("configs/digits/sr4/task.yaml", "configs/samplers/dmap_full.yaml",
                                     "configs/digits/sr4/cse.yaml")
    restored = restorer(Image.open("examples/digits/sr4/digit0010.png"))  # a PIL image, 4x larger

The same config files as the command line (task, method, ``+cse``) build the prior, the sampler and
the task's operator; the call takes what a measurement comes with (a mask, a kernel, its noise std).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from cse.errors import InputError
from cse.images import to_rgb, to_tensor, to_uint8
from cse.operators.measured import normalised_kernel
from cse.restoration import RestorationModule

Images = Image.Image | Sequence[Image.Image] | Tensor


class Restorer:
    """A restoration run's model, called on measurements: PIL images or tensors on [-1, 1]
    (``[C, h, w]`` or ``[B, C, h, w]``), each restored at the size its task makes (x ``factor`` for
    super-resolution), returned in the form given. Measurements of a call share one size."""

    def __init__(self, module: RestorationModule, device: str | torch.device | None = None) -> None:
        self.module = module.eval()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module.to(self.device)

    @classmethod
    def from_configs(cls, *configs: str | Path, options: Sequence[str] = (), device: str | None = None) -> Restorer:
        """From the config files of a ``python -m cse predict`` run (and its ``--option=value`` strings)."""
        from cse.cli import build

        module, _, _ = build(configs, *options)
        if not isinstance(module, RestorationModule):
            raise InputError(f"{configs} make a {type(module).__name__}, not a restoration run")
        return cls(module, device)

    def __call__(
        self,
        measurements: Images,
        mask: Image.Image | Tensor | None = None,
        kernel: np.ndarray | Tensor | None = None,
        noise_std: float | None = None,
        keys: Sequence[str] | None = None,
    ) -> Images:
        """Restore ``measurements``; ``mask``: 1 (tensor) or white (image) where pixels are to be
        filled in; ``kernel``: the blur kernel (normalised here); ``noise_std`` on [-1, 1] (None: the
        task's); ``keys`` name the measurements, from which their seeds derive (default image0, ...)."""
        y, to_output = as_batch(measurements)
        keys = list(keys) if keys is not None else [f"image{i}" for i in range(len(y))]
        if len(keys) != len(y):
            raise InputError(f"{len(keys)} keys for {len(y)} measurements")
        group = {
            "key": keys,
            "measurement": list(y.to(self.device)),
            "mask": [as_mask(mask, y.shape[-2:])] * len(y),
            "kernel": [as_kernel(kernel)] * len(y),
            "reference": [None] * len(y),
            "noise_std": [noise_std] * len(y),
        }
        with torch.inference_mode(False):
            restoration = self.module.restore_group(group)
        return to_output(torch.stack(list(restoration.recon)))


def as_batch(measurements: Images):
    """``[B, C, h, w]`` on [-1, 1], and the function that returns restorations in the form given."""
    if isinstance(measurements, Tensor):
        if measurements.ndim == 3:
            return measurements[None].float(), lambda x: x[0]
        if measurements.ndim == 4:
            return measurements.float(), lambda x: x
        raise InputError(f"a measurement tensor is [C, h, w] or [B, C, h, w], got {tuple(measurements.shape)}")
    single = isinstance(measurements, Image.Image)
    images = [measurements] if single else list(measurements)
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise InputError(f"measurements of one call share a size, got {sorted(sizes)}")
    y = torch.stack([to_tensor(to_rgb(image)) for image in images])
    as_images = lambda x: [Image.fromarray(to_uint8(image)) for image in x]  # noqa: E731
    return y, (lambda x: as_images(x)[0]) if single else as_images


def as_mask(mask: Image.Image | Tensor | None, size: tuple[int, int]) -> Tensor | None:
    """``[1, h, w]`` with 1 where observed, from a mask (white / 1 = fill in)."""
    if mask is None:
        return None
    fill = torch.from_numpy(np.asarray(mask.convert("L")) >= 128) if isinstance(mask, Image.Image) else mask.bool()
    fill = fill.reshape(fill.shape[-2:]) if fill.numel() == fill.shape[-2] * fill.shape[-1] else fill
    if tuple(fill.shape) != tuple(size):
        raise InputError(f"the mask is {tuple(fill.shape)}, the measurements {tuple(size)}")
    return (~fill).float()[None]


def as_kernel(kernel: np.ndarray | Tensor | None) -> Tensor | None:
    """The kernel as a normalised ``[k_h, k_w]`` tensor, or an ``InputError`` saying why it is not one."""
    if kernel is None:
        return None
    return normalised_kernel(torch.as_tensor(np.asarray(kernel, dtype=np.float64)))
