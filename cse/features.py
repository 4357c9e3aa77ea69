"""Feature networks for FID/KID besides Inception: any module mapping ``[N, 3, H, W]`` uint8 images
to ``[N, num_features]`` (torchmetrics' contract), with a ``num_features`` attribute."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from cse.paths import project_path, where


class PixelFeatures(nn.Module):
    """The image down-sampled to ``size`` x ``size`` (area averaging), flattened, on [0, 1]:
    no pretrained weights. Crude but honest for small data and tests."""

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.size = size
        self.num_features = 3 * size * size

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return F.adaptive_avg_pool2d(x, self.size).flatten(1)


class DigitsClassifier(nn.Module):
    """A small CNN on 16x16 digits on [-1, 1]; its 128-d penultimate layer is the FID/KID feature."""

    num_features = 128

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, self.num_features), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(self.num_features, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class DigitsFeatures(nn.Module):
    """FID/KID features of digits: the trained classifier's penultimate layer on uint8 images,
    each vector rescaled to norm ``sqrt(d)``. KID's kernel ``(x.y / d + 1)^3`` assumes
    Inception-scale features; on the raw ReLU activations (10x larger) its estimate drowns in
    variance, while on this scale ``x.y / d`` is a cosine in [-1, 1]."""

    num_features = DigitsClassifier.num_features

    def __init__(self, weights: str = "checkpoints/digits/classifier.safetensors") -> None:
        super().__init__()
        path = project_path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"digits classifier weights not found at {where(weights)}; "
                "train them with `python -m cse fit --config configs/digits/train_classifier.yaml`"
            )
        self.classifier = DigitsClassifier()
        self.classifier.load_state_dict(load_file(path))
        self.classifier.requires_grad_(False).eval()

    def forward(self, images: Tensor) -> Tensor:
        """Images of any size are brought to the classifier's 16 px by area averaging first."""
        x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
        if x.shape[-2:] != (16, 16):
            x = F.interpolate(x, size=(16, 16), mode="area")
        return F.normalize(self.classifier.body(x), dim=1) * self.num_features**0.5
