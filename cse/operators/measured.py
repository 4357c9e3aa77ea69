"""Operators for measurements a user already has (``y`` given, not simulated from a clean image).

A task's operator is the template: ``SuperResolution`` restores a ``factor`` times larger image,
a blur or an inpainting restores one of the measurement's own size, with the kernel or the mask
each measurement comes with (:func:`read_kernel`, :func:`read_mask`) in place of the task's.
An operator whose parameters are unknown for a given measurement (the nonlinear blur draws its
kernel per image) is refused: blind restoration is not in scope.

Networks need sizes they divide (the UNet's down-sampling, times the VAE factor on latent
priors): an image of another size is restored inside a larger, padded one, and :class:`Cropped`
makes the measurement see only the image's window, so the padding is left to the prior and is
cropped away at the end.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from cse.digest import tensor_digest
from cse.errors import InputError
from cse.operators.base import LinearOperator, Operator, check_image
from cse.operators.blur import Convolution
from cse.operators.linear import BoxInpainting, SuperResolution

MAX_KERNEL_SIDE = 257


class MaskInpainting(LinearOperator):
    """Keeps the pixels where ``mask`` is 1 and zeroes the others: ``mask`` ``[B or 1, 1, H, W]``."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask must be [B, 1, H, W], got shape {tuple(mask.shape)}")
        self.register_buffer("mask", mask)

    def extra_repr(self) -> str:
        return f"mask={tuple(self.mask.shape)}, digest={tensor_digest(self.mask)}"

    def describe(self) -> dict:
        return {**super().describe(), "mask": list(self.mask.shape), "digest": tensor_digest(self.mask)}

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        if self.mask.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"a {tuple(self.mask.shape[-2:])} mask for {tuple(x.shape[-2:])} images")
        return x * self.mask.to(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.forward(y)

    def lift(self, y: Tensor) -> Tensor:
        return self.forward(y)


class Cropped(LinearOperator):
    """``A`` applied to the ``window`` (top, left, height, width) of a larger image of ``size``.

    The pixels outside the window are not measured (``A^T`` puts zeros there), so the prior alone
    decides them; ``crop`` takes the window back out of a restoration. ``lift`` pads the control
    image by repeating its edges, so a CSE sees no artificial border.
    """

    def __init__(self, operator: LinearOperator, window: tuple[int, int, int, int], size: tuple[int, int]) -> None:
        super().__init__()
        top, left, height, width = window
        if top < 0 or left < 0 or top + height > size[0] or left + width > size[1]:
            raise ValueError(f"window {window} does not fit an image of {size}")
        self.operator, self.window, self.size = operator, window, tuple(size)

    def extra_repr(self) -> str:
        return f"window={self.window}, size={self.size}"

    def describe(self) -> dict:
        return self.operator.describe()

    def padding(self) -> tuple[int, int, int, int]:
        """``F.pad``'s (left, right, top, bottom) from the window to the whole image."""
        top, left, height, width = self.window
        return left, self.size[1] - left - width, top, self.size[0] - top - height

    def crop(self, x: Tensor) -> Tensor:
        top, left, height, width = self.window
        return x[..., top : top + height, left : left + width]

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"Cropped expects {self.size} images, got {tuple(x.shape[-2:])}")
        return self.operator(self.crop(x))

    def adjoint(self, y: Tensor) -> Tensor:
        return F.pad(self.operator.adjoint(y), self.padding())

    def lift(self, y: Tensor) -> Tensor:
        return F.pad(self.operator.lift(y), self.padding(), mode="replicate")


class Clipped(LinearOperator):
    """``clip(A x, -1, 1)``: a measurement stored as an image (8-bit PNG) holds ``A x`` clipped to the
    range, and bicubic down-sampling overshoots it (12 % of the values of ×4 digits measurements lie
    below -1). Fitting the clipped values as if they were ``A x`` biases a restoration; through
    this operator the guidance of gradient methods (DPS, DMAP, ...) sees the clipping exactly (no
    pull where ``A x`` is beyond a stored extreme). The spectral methods (DDRM, DiffPIR, PiGDM,
    RED-diff: ``adjoint`` and the SVD) use ``A`` itself, i.e. they treat the stored values as unclipped.
    """

    def __init__(self, operator: LinearOperator) -> None:
        super().__init__()
        self.operator = operator

    def describe(self) -> dict:
        return self.operator.describe()

    def forward(self, x: Tensor) -> Tensor:
        return self.operator(x).clamp(-1, 1)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.operator.adjoint(y)

    def lift(self, y: Tensor) -> Tensor:
        return self.operator.lift(y)


def padded_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """The smallest size at least ``size`` whose sides ``multiple`` divides."""
    return tuple(-(-side // multiple) * multiple for side in size)


def centred_window(size: tuple[int, int], padded: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of ``size`` centred in ``padded`` (the extra pixel, if odd, below/right)."""
    return ((padded[0] - size[0]) // 2, (padded[1] - size[1]) // 2, *size)


def image_size(template: Operator, measurement_size: tuple[int, int]) -> tuple[int, int]:
    """The size of the image a measurement of ``measurement_size`` restores to under ``template``."""
    if isinstance(template, SuperResolution):
        return (measurement_size[0] * template.factor, measurement_size[1] * template.factor)
    if isinstance(template, Convolution | BoxInpainting | MaskInpainting):
        return tuple(measurement_size)
    raise InputError(unknown_operator(template))


def unknown_operator(template: Operator) -> str:
    name = type(template).__name__
    return (
        f"{name} cannot restore a given measurement: its parameters are unknown for it (a nonlinear blur draws "
        "its kernel per image) and blind restoration is not in scope; use a task with a known operator, e.g. "
        "configs/digits/gblur/task.yaml with --data.init_args.kernel=KERNEL.npy"
    )


def check_restorable(template: Operator) -> None:
    """Refuse, in one line, a task whose operator a given measurement cannot be restored under."""
    image_size(template, (1, 1))


def with_parameters(template: Operator, masks: list[Tensor | None], kernels: list[Tensor | None]) -> Operator:
    """The template with each measurement's own mask or kernel (where any has one; the others keep
    the task's): ``masks`` ``[1, H, W]`` with 1 where observed, ``kernels`` ``[k_h, k_w]``."""
    if any(k is not None for k in kernels):
        if not isinstance(template, Convolution):
            raise InputError(f"a blur kernel was given, but the task's operator is {type(template).__name__}")
        return Convolution(stack_kernels([k if k is not None else template.kernel for k in kernels]))
    if any(m is not None for m in masks):
        if not isinstance(template, BoxInpainting | MaskInpainting):
            raise InputError(f"a mask was given, but the task's operator is {type(template).__name__}")
        given = next(m for m in masks if m is not None)
        box = template.mask(given)[None]  # the task's box where a measurement has no mask of its own
        return MaskInpainting(torch.stack([m if m is not None else box for m in masks]))
    return template


def stack_kernels(kernels: list[Tensor]) -> Tensor:
    """``[B, k, k]``: the kernels zero-padded, centred, to the largest odd sides among them."""
    height = max(k.shape[-2] for k in kernels)
    width = max(k.shape[-1] for k in kernels)
    padded = []
    for k in kernels:
        dh, dw = (height - k.shape[-2]) // 2, (width - k.shape[-1]) // 2
        padded.append(F.pad(k.float(), (dw, dw, dh, dh)))
    return torch.stack(padded)


def read_kernel(data: bytes, name: str) -> Tensor:
    """A blur kernel from the bytes of ``name``: ``.npy`` (a 2-D float array) or an image file (its
    gray levels), normalised to sum 1; anything that is not a kernel is an ``InputError`` saying why."""
    try:
        if name.lower().endswith(".npy"):
            array = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            with Image.open(io.BytesIO(data)) as image:
                array = np.asarray(image.convert("F"))
        kernel = torch.as_tensor(np.asarray(array, dtype=np.float64))
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"kernel {name}: not readable as .npy or an image ({error})") from error
    return normalised_kernel(kernel, f"kernel {name}")


def normalised_kernel(kernel: Tensor, name: str = "kernel") -> Tensor:
    """``kernel`` as float32 with sum 1, or an ``InputError`` naming it and why it is not a kernel."""
    if problem := kernel_problem(kernel):
        raise InputError(f"{name}: {problem}")
    return (kernel / kernel.sum()).float()


def kernel_problem(kernel: Tensor) -> str | None:
    """Why ``kernel`` is not a usable blur kernel, or None."""
    if kernel.ndim != 2:
        return f"a kernel is a 2-D array, this one has shape {tuple(kernel.shape)}"
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        sides = f"{kernel.shape[0]}x{kernel.shape[1]}"
        return f"a centred kernel has odd sides, this one is {sides} (pad it by a zero row or column)"
    if max(kernel.shape) > MAX_KERNEL_SIDE:
        return f"sides above {MAX_KERNEL_SIDE} px are not a blur kernel ({kernel.shape[0]}x{kernel.shape[1]})"
    if not bool(torch.isfinite(kernel).all()):
        return "it holds NaN or infinite values"
    if float(kernel.min()) < -1e-3 * float(kernel.abs().max()) or not float(kernel.sum()) > 0:
        return "a blur kernel has non-negative weights with a positive sum"
    return None


def read_mask(data: bytes, name: str, size: tuple[int, int]) -> Tensor:
    """``[1, H, W]`` with 1 where the measurement is observed, from the bytes of a mask image in
    diffusers' convention: white (>= 128) marks the pixels to fill in, black the pixels kept."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            gray = np.asarray(image.convert("L"))
    except (OSError, ValueError) as error:
        raise InputError(f"mask {name}: not readable as an image ({error})") from error
    if gray.shape != tuple(size):
        raise InputError(f"mask {name} is {gray.shape[0]}x{gray.shape[1]}, its measurement {size[0]}x{size[1]}")
    return torch.from_numpy((gray < 128).astype(np.float32))[None]
