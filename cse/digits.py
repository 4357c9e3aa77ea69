"""The embedded tier: scikit-learn's handwritten digits, a pixel-space prior trained on them,
and a small classifier whose features serve FID/KID on digits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from lightning.pytorch import LightningDataModule, LightningModule
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, TensorDataset

from cse.operators.resize import imresize
from cse.priors.diffusers_prior import DiffusersPrior, save_pipeline_folder, sd_scheduler
from cse.priors.schedule import DiscreteSchedule
from cse.samplers import Ancestral
from cse.training import denoising_loss

TEST_COUNT = 200
SPLIT_SEED = 0


def digit_images(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as ``[N, size, size]`` uint8 (MATLAB-style bicubic from 8x8), labels ``[N]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    upsampled = imresize(torch.from_numpy(digits.images / 16.0), size, size).clamp(0, 1)
    return (upsampled * 255).round().to(torch.uint8).numpy(), digits.target


def split(n: int) -> tuple[list[int], list[int]]:
    """The fixed seeded split: ``TEST_COUNT`` test indices, the rest train, each sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    return sorted(order[TEST_COUNT:]), sorted(order[:TEST_COUNT])


# -- the prior -----------------------------------------------------------------------------------


def pixel_unet(sample_size: int, block_out_channels: tuple[int, ...], layers_per_block: int) -> UNet2DConditionModel:
    """An unconditional pixel-space UNet (no attention: the empty prompt carries nothing)."""
    levels = len(block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        mid_block_type="UNetMidBlock2D",
        cross_attention_dim=8,
        norm_num_groups=16,
    )


class PriorModule(LightningModule):
    """Train a pixel-space ``UNet2DConditionModel`` prior from scratch (DDPM loss, SD2 schedule),
    keep an exponential moving average of its weights, and export the average as a diffusers folder."""

    def __init__(
        self,
        sample_size: int = 16,
        block_out_channels: tuple[int, ...] = (32, 64),
        layers_per_block: int = 2,
        learning_rate: float = 3e-4,
        ema_decay: float = 0.999,
        export_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(seed)
        unet = pixel_unet(sample_size, tuple(block_out_channels), layers_per_block)
        self.scheduler = sd_scheduler()
        self.prior = DiffusersPrior(unet, DiscreteSchedule(self.scheduler.alphas_cumprod), torch.zeros(1, 1, 8))
        unet.requires_grad_(True).train()
        self.ema = AveragedModel(unet, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = denoising_loss(self.prior, batch["image"], batch["key"], f"prior:{self.current_epoch}:{batch_idx}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["key"]))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.ema.update_parameters(self.prior.unet)

    def ema_prior(self) -> DiffusersPrior:
        return DiffusersPrior(self.ema.module, self.prior.schedule, self.prior.prompt_embeds)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = denoising_loss(self.ema_prior(), batch["image"], batch["key"], "val")
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["key"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.prior.unet.parameters(), lr=self.hparams.learning_rate)

    def on_train_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            save_pipeline_folder(self.hparams.export_dir, self.ema.module, self.scheduler)

    @torch.no_grad()
    def samples(self, n: int, num_steps: int = 50) -> Tensor:
        return Ancestral(num_steps)(self.ema_prior(), None, None, seeds=range(n))


# -- the classifier ------------------------------------------------------------------------------


class DigitsClassifier(nn.Module):
    """A small CNN on 16x16 digits in [-1, 1]; its 128-d penultimate layer is the FID/KID feature."""

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
        if not Path(weights).is_file():
            raise FileNotFoundError(
                f"digits classifier weights not found at {weights} (train: configs/digits/classifier.yaml)"
            )
        self.classifier = DigitsClassifier()
        self.classifier.load_state_dict(load_file(weights))
        self.classifier.requires_grad_(False).eval()

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
        return F.normalize(self.classifier.body(x), dim=1) * self.num_features**0.5


class DigitsDataModule(LightningDataModule):
    """Labelled digits (train split / test split) for the classifier, straight from scikit-learn."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def _dataset(self, indices: list[int]) -> TensorDataset:
        images, labels = digit_images()
        x = torch.from_numpy(images[indices]).float().div(127.5).sub(1)[:, None].expand(-1, 3, -1, -1)
        return TensorDataset(x.contiguous(), torch.from_numpy(labels[indices]).long())

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset(split(1797)[0]), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset(split(1797)[1]), batch_size=self.batch_size)


class ClassifierModule(LightningModule):
    def __init__(self, learning_rate: float = 1e-3, export_path: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.classifier = DigitsClassifier()

    def step(self, batch: tuple[Tensor, Tensor], name: str) -> Tensor:
        x, labels = batch
        if name == "train":  # small shifts, so that the features do not hinge on exact pixels
            x = torch.roll(x, shifts=tuple(torch.randint(-1, 2, (2,)).tolist()), dims=(-2, -1))
        logits = self.classifier(x)
        loss = F.cross_entropy(logits, labels)
        self.log(f"{name}/loss", loss, prog_bar=True)
        self.log(f"{name}/accuracy", (logits.argmax(1) == labels).float().mean(), prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.Adam(self.classifier.parameters(), lr=self.hparams.learning_rate)

    def on_train_end(self) -> None:
        if self.hparams.export_path and self.trainer.is_global_zero:
            os.makedirs(Path(self.hparams.export_path).parent, exist_ok=True)
            save_file(self.classifier.state_dict(), self.hparams.export_path)
