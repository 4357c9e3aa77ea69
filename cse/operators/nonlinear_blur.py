"""Nonlinear blurs: a blur kernel fixed per image, applied by a nonlinear map. No adjoint.

:class:`NonlinearBlur` is DPS's (Chung et al. 2023) and the paper's: the blur-kernel network of
Tran et al. (CVPR 2021, "Exploring Image Deblurring via Encoded Blur Kernel Space", its
``KernelWizard.adaptKernel``) applies a kernel latent ``k`` to an image. DPS and the paper's
research code draw a new random ``k`` at every call, so the measurement and every guidance step
see different blurs; here ``k`` is drawn once per image from that image's seed (``bind``) and kept.

:class:`SaturatedBlur` is a small nonlinear blur of the same kind for 16 px digits, which the
kernel network (made for images whose sides are multiples of 128) cannot take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cse.digest import file_digest, tensor_digest
from cse.operators.base import Operator, check_image
from cse.operators.blur import reflect_index
from cse.paths import project_path, where

# -- the blur-kernel network (its adaptKernel path; layer names match the published state dict) ----


class ResidualBlock(nn.Module):
    """``x + conv2(relu(conv1(x)))``, 3x3 convolutions with bias, no normalisation."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, 1, 1)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class UNetLevel(nn.Module):
    """One level of the kernel adapter's U-Net: 4x4 stride-2 convolutions down and up; the kernel
    latent joins the features at the innermost level; inner levels concatenate their input."""

    def __init__(self, outer: int, inner: int, submodule: UNetLevel | None = None, outermost: bool = False) -> None:
        super().__init__()
        self.outermost, self.innermost = outermost, submodule is None
        down = nn.Conv2d(outer, inner, 4, 2, 1, bias=False)
        up = nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=outermost)
        if outermost:
            self.down = nn.Sequential(down)
            self.up = nn.Sequential(nn.ReLU(), up, nn.Tanh())
        else:
            self.down = nn.Sequential(nn.LeakyReLU(0.2), down, *([] if self.innermost else [nn.Identity()]))
            self.up = nn.Sequential(nn.ReLU(), up, nn.Identity())
        self.submodule = submodule

    def forward(self, x: Tensor, kernel: Tensor) -> Tensor:
        inside = torch.cat([self.down(x), kernel], dim=1) if self.innermost else self.submodule(self.down(x), kernel)
        out = self.up(inside)
        return out if self.outermost else torch.cat([out, x], dim=1)


class KernelAdapter(nn.Module):
    """Five-level U-Net (``width`` to ``8 width`` channels) that takes a kernel latent of ``8 width``
    channels at its bottleneck, ``1/32`` of its input's size."""

    def __init__(self, width: int) -> None:
        super().__init__()
        level = UNetLevel(8 * width, 8 * width)
        for outer, inner in [(4 * width, 8 * width), (2 * width, 4 * width), (width, 2 * width)]:
            level = UNetLevel(outer, inner, level)
        self.model = UNetLevel(width, width, level, outermost=True)

    def forward(self, x: Tensor, kernel: Tensor) -> Tensor:
        return self.model(x, kernel)


class KernelWizard(nn.Module):
    """``adaptKernel(x, k) = recon(adapter(features(x), k)) + x`` for images ``x`` on [0, 1]
    (sides multiples of 128) and kernel latents ``k`` ``[B, 8 width, H/128, W/128]``. The published
    weights have width 64, 10 front and 20 back residual blocks (options/generate_blur/default.yml)."""

    def __init__(self, width: int = 64, front_blocks: int = 10, back_blocks: int = 20) -> None:
        super().__init__()
        act = nn.LeakyReLU(0.1)
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1), act, nn.Conv2d(width, width, 3, 2, 1), act,
            nn.Conv2d(width, width, 3, 2, 1), act, *[ResidualBlock(width) for _ in range(front_blocks)],
        )  # fmt: skip
        self.adapter = KernelAdapter(width)
        self.recon_trunk = nn.Sequential(
            *[ResidualBlock(width) for _ in range(back_blocks)],
            nn.Conv2d(width, 4 * width, 3, 1, 1), nn.PixelShuffle(2), act,
            nn.Conv2d(width, 4 * width, 3, 1, 1), nn.PixelShuffle(2), act,
            nn.Conv2d(width, width, 3, 1, 1), act, nn.Conv2d(width, 3, 3, 1, 1),
        )  # fmt: skip
        self.kernel_channels = 8 * width

    def forward(self, x: Tensor, kernel: Tensor) -> Tensor:
        return self.recon_trunk(self.adapter(self.feature_extractor(x), kernel)) + x


def load_kernel_wizard(weights: str) -> KernelWizard:
    """The published network from a local file (its kernel-extractor half, unused here, is left out)."""
    path = project_path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"the blur-kernel network's weights are not at {where(weights)}: download GOPRO_wVAE.pth as the "
            "README of VinAIResearch/blur-kernel-space-exploring says and pass its path as weights=..."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("kernel_extractor.")}
    network = KernelWizard()
    network.load_state_dict(state)  # strict: every other parameter must be there
    return network


# -- operators ------------------------------------------------------------------------------------


def kernel_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


class RandomKernelOperator(Operator):
    """An operator with a random kernel per image: ``bind(seeds, image_shape)`` draws the kernels
    (image i's from ``seeds[i]``) and returns the operator fixed to them; only that one measures."""

    def kernels(self, seeds: Sequence[int], image_shape: Sequence[int]) -> Tensor:
        raise NotImplementedError

    def apply(self, x: Tensor, kernels: Tensor) -> Tensor:
        raise NotImplementedError

    def bind(self, seeds: Sequence[int], image_shape: Sequence[int]) -> BoundKernels:
        return BoundKernels(self, self.kernels(seeds, image_shape))

    def forward(self, x: Tensor) -> Tensor:
        raise ValueError(f"{type(self).__name__} measures with kernels bound to the images: call bind(seeds, shape)")

    def lift(self, y: Tensor) -> Tensor:
        """The measured (blurred) image itself."""
        return y


class BoundKernels(Operator):
    """``operator`` with these images' kernels: ``A(x) = operator.apply(x, kernels)``."""

    def __init__(self, operator: RandomKernelOperator, kernels: Tensor) -> None:
        super().__init__()
        self.operator = operator
        self.register_buffer("kernels", kernels)

    def extra_repr(self) -> str:
        return f"kernels={tuple(self.kernels.shape)}, digest={tensor_digest(self.kernels)}"

    def forward(self, x: Tensor) -> Tensor:
        check_image(x)
        if self.kernels.shape[0] != x.shape[0]:
            raise ValueError(f"bound to {self.kernels.shape[0]} images' kernels, got a batch of {x.shape[0]}")
        return self.operator.apply(x, self.kernels.to(x))

    def describe(self) -> dict:
        """The operator whose kernels these are: the kernels are drawn per image, the family is the task."""
        return self.operator.describe()

    def lift(self, y: Tensor) -> Tensor:
        return self.operator.lift(y)


class NonlinearBlur(RandomKernelOperator):
    """DPS's nonlinear blur: ``y = clamp(2 adaptKernel((x + 1) / 2, k) - 1, -1, 1)``, one kernel latent
    ``k = kernel_scale n`` per image, ``n ~ N(0, I)`` of shape ``[512, H/128, W/128]``.

    Args:
        weights: the published GOPRO_wVAE.pth (a local file; it is not downloaded automatically).
        kernel_scale: 1.2, as DPS and the paper.
        random_weights: use a randomly initialised network instead (tests only); width,
            front_blocks, back_blocks then size it (the published one: 64, 10, 20).
    """

    def __init__(
        self,
        weights: str = "bkse/GOPRO_wVAE.pth",
        kernel_scale: float = 1.2,
        random_weights: bool = False,
        width: int = 64,
        front_blocks: int = 10,
        back_blocks: int = 20,
    ) -> None:
        super().__init__()
        network = KernelWizard(width, front_blocks, back_blocks) if random_weights else load_kernel_wizard(weights)
        self.network = network.requires_grad_(False).eval()
        self.kernel_scale = kernel_scale
        self.weights = "random" if random_weights else f"{weights} ({file_digest(project_path(weights))})"

    def extra_repr(self) -> str:
        return f"kernel_scale={self.kernel_scale}, weights={self.weights}"

    def describe(self) -> dict:
        return {**super().describe(), "kernel_scale": self.kernel_scale, "weights": self.weights}

    def kernels(self, seeds: Sequence[int], image_shape: Sequence[int]) -> Tensor:
        height, width = image_shape[-2:]
        if height % 128 or width % 128:
            raise ValueError(f"NonlinearBlur needs image sides divisible by 128, got {height}x{width}")
        shape = (self.network.kernel_channels, height // 128, width // 128)
        noise = torch.stack([torch.randn(shape, generator=g) for g in kernel_generators(seeds)])
        return self.kernel_scale * noise

    def apply(self, x: Tensor, kernels: Tensor) -> Tensor:
        blurred = self.network((x + 1) / 2, kernels)
        return (2 * blurred - 1).clamp(-1, 1)


class SaturatedBlur(RandomKernelOperator):
    """A nonlinear blur for small images: each image is blurred (reflect padding) by its own random
    anisotropic Gaussian kernel, drawn from its seed: orientation uniform, std along it uniform in
    ``major`` and across it in ``minor`` (pixels); then a saturating sensor response
    ``tanh(gain * b) / tanh(gain)`` maps the blurred image back onto [-1, 1]."""

    def __init__(
        self,
        kernel_size: int = 9,
        major: tuple[float, float] = (1.0, 2.5),
        minor: tuple[float, float] = (0.3, 1.0),
        gain: float = 2.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or gain <= 0:
            raise ValueError(f"SaturatedBlur needs an odd kernel_size and gain > 0, got {kernel_size}, {gain}")
        self.kernel_size, self.major, self.minor, self.gain = kernel_size, tuple(major), tuple(minor), gain

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, major={self.major}, minor={self.minor}, gain={self.gain}"

    def describe(self) -> dict:
        settings = {"kernel_size": self.kernel_size, "major": list(self.major), "minor": list(self.minor)}
        return {**super().describe(), **settings, "gain": self.gain}

    def kernel(self, generator: torch.Generator) -> Tensor:
        angle, along, across = torch.rand(3, generator=generator, dtype=torch.float64)
        angle = math.pi * angle
        along = self.major[0] + (self.major[1] - self.major[0]) * along
        across = self.minor[0] + (self.minor[1] - self.minor[0]) * across
        offsets = torch.arange(-(self.kernel_size // 2), self.kernel_size // 2 + 1, dtype=torch.float64)
        yy, xx = torch.meshgrid(offsets, offsets, indexing="ij")
        u = xx * torch.cos(angle) + yy * torch.sin(angle)
        v = -xx * torch.sin(angle) + yy * torch.cos(angle)
        kernel = torch.exp(-0.5 * ((u / along) ** 2 + (v / across) ** 2))
        return (kernel / kernel.sum()).float()

    def kernels(self, seeds: Sequence[int], image_shape: Sequence[int]) -> Tensor:
        return torch.stack([self.kernel(g) for g in kernel_generators(seeds)])

    def apply(self, x: Tensor, kernels: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        pad = self.kernel_size // 2
        rows, cols = reflect_index(height, pad, x.device), reflect_index(width, pad, x.device)
        padded = x.index_select(-2, rows).index_select(-1, cols)
        weight = kernels[:, None].repeat_interleave(channels, dim=0)  # one kernel per image, for each channel
        flat = padded.reshape(1, batch * channels, *padded.shape[-2:])
        blurred = F.conv2d(flat, weight, groups=batch * channels).reshape(x.shape)
        return torch.tanh(self.gain * blurred) / math.tanh(self.gain)
