"""Image-quality metrics on images in [-1, 1] (converted to [0, 1] here, at the boundary).

Per image: PSNR, SSIM, LPIPS (AlexNet, as the paper) and the measurement residual. Over a set:
FID and KID on any feature network (Inception by default). Diversity: the per-pixel standard
deviation over k samples of one measurement (the paper's Observation III).

Pretrained weights are read from local files; a missing one is an error naming the file and
where to put it (these machines cannot download).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet weights
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception


def to_unit(x: Tensor) -> Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(x: Tensor, reference: Tensor) -> Tensor:
    """``[B]`` PSNR in dB on [0, 1]."""
    mse = (to_unit(x) - to_unit(reference)).square().flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def ssim(x: Tensor, reference: Tensor) -> Tensor:
    """``[B]`` SSIM (Gaussian window 11, sigma 1.5) on [0, 1]."""
    return structural_similarity_index_measure(to_unit(x), to_unit(reference), data_range=1.0, reduction="none")


def weights_file(name: str, weights_dir: str | os.PathLike | None, what: str) -> Path:
    """``weights_dir/name`` (default: torch hub's checkpoint folder); an explained error if absent."""
    folder = Path(weights_dir) if weights_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} needs pretrained weights that cannot be downloaded here: put {name} at {path} "
            f"(or pass its folder as metric_weights_dir), or switch this metric off."
        )
    return path


class LPIPS(nn.Module):
    """LPIPS with the AlexNet backbone, its ImageNet weights read from a local file. ``[B]``."""

    def __init__(self, weights_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        import lpips

        state = torch.load(weights_file(ALEXNET_FILE, weights_dir, "LPIPS"), map_location="cpu", weights_only=True)
        self.model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        backbone = self.model.net
        for _, block in backbone.named_children():  # slices hold features.{i} under name {i}
            for name, param in block.named_parameters():
                param.data.copy_(state[f"features.{name}"])
        self.model.requires_grad_(False).eval()

    @torch.no_grad()
    def forward(self, x: Tensor, reference: Tensor) -> Tensor:
        return self.model(x.float().clamp(-1, 1), reference.float().clamp(-1, 1)).flatten()


def feature_distances(
    real: Tensor | Iterable[Tensor],
    fake: Tensor | Iterable[Tensor],
    feature: nn.Module | None = None,
    weights_dir: str | os.PathLike | None = None,
) -> dict[str, float]:
    """FID and KID between two sets of images in [-1, 1]: ``[N, 3, H, W]`` tensors, or iterables
    of such chunks (so that large sets are never held in memory at once).

    ``feature`` is any module mapping ``[N, 3, H, W]`` uint8 images to ``[N, F]`` with a
    ``num_features`` attribute; None uses torch-fidelity's Inception from ``weights_dir``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    local = {"sync_on_compute": False}  # computed once, on one rank, from files
    if feature is None:
        path = str(weights_file(INCEPTION_FILE, weights_dir, "FID/KID"))
        fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=path, **local)
        kid = KernelInceptionDistance(feature=fid.inception, **local)
    else:
        fid, kid = FrechetInceptionDistance(feature=feature, **local), KernelInceptionDistance(feature=feature, **local)
    count = 0
    for real_chunk, fake_chunk in zip(chunks(real), chunks(fake), strict=True):
        for metric in (fid, kid):
            metric.update((to_unit(real_chunk) * 255).round().to(torch.uint8), real=True)
            metric.update((to_unit(fake_chunk) * 255).round().to(torch.uint8), real=False)
        count += len(fake_chunk)
    kid.subset_size = max(2, min(count, 1000))
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


def chunks(images: Tensor | Iterable[Tensor]) -> Iterable[Tensor]:
    return [images] if isinstance(images, Tensor) else images


class PixelFeatures(nn.Module):
    """FID/KID features without pretrained weights: the image down-sampled to ``size`` x ``size``
    (area averaging), flattened. Crude but honest for small data and tests."""

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.size = size
        self.num_features = 3 * size * size

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return torch.nn.functional.adaptive_avg_pool2d(x, self.size).flatten(1)


def diversity(samples: Tensor) -> Tensor:
    """``[k, C, H, W]`` samples of one measurement -> ``[H, W]`` per-pixel std (on [0, 1], channel mean)."""
    return to_unit(samples).std(dim=0).mean(dim=0)


def heat_map(values: Tensor, vmax: float | None = None) -> np.ndarray:
    """``[H, W]`` non-negative values -> ``[H, W, 3]`` uint8, black-red-yellow-white ("hot")."""
    scale = float(vmax) if vmax is not None else float(values.max().clamp_min(1e-12))
    v = (values.float().cpu() / scale).clamp(0, 1).numpy()
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255).round().astype(np.uint8)
