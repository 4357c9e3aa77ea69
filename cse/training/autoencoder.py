"""The autoencoder of a latent prior: a diffusers ``AutoencoderKL`` trained with MSE and a little KL."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from cse.metrics import psnr
from cse.records import Batch, is_empty
from cse.seeding import randn
from cse.training.common import ConfiguredOptimizer, generators, skips_empty_batches
from cse.training.exports import ExportsWhenDone


class AutoencoderModule(ExportsWhenDone, ConfiguredOptimizer, LightningModule):
    """Train a diffusers ``AutoencoderKL`` for a latent prior: reconstruction MSE plus ``kl_weight``
    times the KL divergence of its posterior to N(0, I), the decoder seeing a posterior draw seeded
    per sample. At the end its ``scaling_factor`` is set to 1 / std of the latents of the training
    images (as SD's 0.18215 was chosen), so that the prior's latents have unit variance, and it is
    exported with ``save_pretrained``.

    Args (the architecture, as ``AutoencoderKL``'s; images shrink by 2 per level after the first):
        block_out_channels, latent_channels, layers_per_block, norm_num_groups, sample_size.
        optimizer: builds the optimizer (default ``torch.optim.AdamW`` at torch's defaults: lr 1e-3,
            betas (0.9, 0.999), weight decay 1e-2, eps 1e-8).
        lr_scheduler: its schedule, stepped every optimizer step (default none: a constant rate).
    """

    export_name = "vae"

    def __init__(
        self,
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        latent_channels: int = 4,
        layers_per_block: int = 1,
        norm_num_groups: int = 16,
        sample_size: int = 32,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        kl_weight: float = 1e-6,
        export_dir: str | None = None,
        overwrite_export: bool = False,
    ) -> None:
        super().__init__()
        self.keep_settings(optimizer, lr_scheduler)
        levels = len(block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
        )

    def reconstruct(self, batch: Batch, salt: str) -> tuple[Tensor, Tensor]:
        posterior = self.vae.encode(batch["image"]).latent_dist
        noise = randn(generators(batch["sample_id"], f"{salt}:latent"), posterior.mean.shape[1:], like=posterior.mean)
        recon = self.vae.decode(posterior.mean + posterior.std * noise).sample
        return recon, posterior.kl().mean()

    @skips_empty_batches
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        recon, kl = self.reconstruct(batch, f"vae:{self.current_epoch}")
        mse = F.mse_loss(recon, batch["image"])
        self.log_dict({"train/mse": mse, "train/kl": kl}, prog_bar=True, batch_size=len(batch["key"]))
        return mse + self.hparams.kl_weight * kl

    @skips_empty_batches
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        with torch.no_grad():
            recon = self.vae.decode(self.vae.encode(batch["image"]).latent_dist.mean).sample
        self.log("val/psnr", psnr(recon, batch["image"]).mean(), prog_bar=True, batch_size=len(batch["key"]))

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self.vae.parameters()

    @torch.no_grad()
    def latent_std(self) -> float:
        """Std of the posterior means of the training images (the scale SD's factor normalises)."""
        self.vae.eval()
        means = [
            self.vae.encode(b["image"].to(self.device)).latent_dist.mean
            for b in self.trainer.datamodule.train_dataloader()
            if not is_empty(b)
        ]
        return torch.cat(means).std().item()

    def on_train_end(self) -> None:
        std = self.latent_std()
        if self.trainer.is_global_zero:
            self.vae.register_to_config(scaling_factor=1.0 / std)
            self.export(self.vae.save_pretrained)
