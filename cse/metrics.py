"""Image-quality metrics on images in [-1, 1] (converted to [0, 1] here, at the boundary).

Per image: PSNR, SSIM, LPIPS (AlexNet, as the paper) and the measurement residual. Over a set:
FID and KID on any feature network (Inception by default; others in :mod:`cse.features`).
Diversity: the per-pixel standard deviation over k samples of one measurement (the paper's
Observation III), in the paper's units: images on [-1, 1], averaged over channels.

Pretrained weights are read from local files; a missing one is an error naming the file and
where to put it (nothing is downloaded behind the user's back).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

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
            f"{what} needs pretrained weights, which are not downloaded automatically: put {name} at {path} "
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
    kid_subset_size: int = 100,
    kid_subsets: int = 100,
) -> dict[str, float | None]:
    """FID and KID between two sets of images on [-1, 1]: ``[N, 3, H, W]`` tensors, or iterables
    of such chunks (so that large sets are never held in memory at once).

    ``feature`` is any module mapping ``[N, 3, H, W]`` uint8 images to ``[N, F]`` with a
    ``num_features`` attribute; None uses torch-fidelity's Inception from ``weights_dir``.
    KID is the mean (and std) over ``kid_subsets`` random subsets of a fixed ``kid_subset_size``
    (torchmetrics' estimator); with fewer images than that, KID is None.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    local = {"sync_on_compute": False}  # computed once, on one rank, from files
    kid_args = {"subset_size": kid_subset_size, "subsets": kid_subsets, **local}
    if feature is None:
        path = str(weights_file(INCEPTION_FILE, weights_dir, "FID/KID"))
        fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=path, **local)
        kid = KernelInceptionDistance(feature=fid.inception, **kid_args)
    else:
        fid, kid = (
            FrechetInceptionDistance(feature=feature, **local),
            KernelInceptionDistance(feature=feature, **kid_args),
        )
    count = 0
    with torch.random.fork_rng(devices=[]):  # KID's subsets are drawn from the global stream
        torch.manual_seed(0)
        for real_chunk, fake_chunk in zip(chunks(real), chunks(fake), strict=True):
            for metric in (fid, kid):
                metric.update((to_unit(real_chunk) * 255).round().to(torch.uint8), real=True)
                metric.update((to_unit(fake_chunk) * 255).round().to(torch.uint8), real=False)
            count += len(fake_chunk)
        result: dict[str, float | None] = {"fid": float(fid.compute()), "kid": None, "kid_std": None}
        if count >= kid_subset_size:
            kid_mean, kid_std = kid.compute()
            result |= {"kid": float(kid_mean), "kid_std": float(kid_std)}
    return result


def chunks(images: Tensor | Iterable[Tensor]) -> Iterable[Tensor]:
    return [images] if isinstance(images, Tensor) else images


def diversity(samples: Tensor) -> Tensor:
    """``[k, C, H, W]`` samples of one measurement on [-1, 1] -> ``[H, W]`` per-pixel standard
    deviation over the k samples, averaged over channels (the paper's units for Observation III)."""
    return samples.float().std(dim=0).mean(dim=0)
