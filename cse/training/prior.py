"""A diffusion prior trained from scratch (pixel or latent), its weights averaged, exported for diffusers."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cse.paths import project_path, where
from cse.priors.diffusers_prior import DiffusersPrior, save_pipeline_folder, sd_scheduler
from cse.priors.schedule import DiscreteSchedule
from cse.records import Batch
from cse.seeding import randn
from cse.training.common import ConfiguredOptimizer, generators, seeded_loss, skips_empty_batches
from cse.training.exports import ExportsWhenDone


def load_vae(path: str) -> AutoencoderKL:
    """A trained ``AutoencoderKL`` folder (e.g. exported by :class:`AutoencoderModule`)."""
    folder = project_path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no AutoencoderKL folder at {where(path)}; train one with an AutoencoderModule config")
    return AutoencoderKL.from_pretrained(folder).requires_grad_(False).eval()


def prior_adamw(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW at 3e-4, betas (0.9, 0.999), weight decay 1e-2, eps 1e-8: the digits priors' optimizer."""
    return torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)


class PriorModule(ExportsWhenDone, ConfiguredOptimizer, LightningModule):
    """Train a diffusion prior from scratch: any diffusers ``UNet2DConditionModel`` (given in the
    config), in pixel space or, with ``vae``, on the latents of a trained ``AutoencoderKL`` (a
    posterior draw per image, as diffusers trains SD); SD2's schedule and the prior's own loss; an
    exponential moving average of the weights, exported as a diffusers folder that
    ``DiffusersPrior.from_pretrained`` loads.

    The UNet sees the empty prompt as one zero token of its ``cross_attention_dim``.
    Args:
        vae: folder of a trained, frozen ``AutoencoderKL`` (None: a pixel-space prior).
        optimizer, lr_scheduler: build the UNet's optimizer (default :func:`prior_adamw`) and its
            schedule, stepped every optimizer step (default none: a constant rate).
    """

    export_name = "prior"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: str | None = None,
        optimizer: OptimizerCallable = prior_adamw,
        lr_scheduler: LRSchedulerCallable | None = None,
        ema_decay: float = 0.999,
        export_dir: str | None = None,
        overwrite_export: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.keep_settings(optimizer, lr_scheduler, ignore=["unet"])
        self.scheduler = sd_scheduler()
        prompt = torch.zeros(1, 1, unet.config.cross_attention_dim)
        autoencoder = load_vae(vae) if vae else None
        self.prior = DiffusersPrior(unet, DiscreteSchedule(self.scheduler.alphas_cumprod), prompt, vae=autoencoder)
        unet.requires_grad_(True).train()
        self.ema = AveragedModel(unet, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)

    def train(self, mode: bool = True) -> PriorModule:
        super().train(mode)
        if self.prior.vae is not None:
            self.prior.vae.eval()
        return self

    def x0(self, prior: DiffusersPrior, batch: Batch, salt: str) -> Tensor:
        """The images, or for a latent prior a posterior draw of their latents, seeded per sample."""
        images = batch["image"]
        if prior.vae is None:
            return images
        noise = randn(generators(batch["sample_id"], f"{salt}:latent"), prior.state_shape(images.shape), like=images)
        with torch.no_grad():
            return prior.encode(images, noise)

    @skips_empty_batches
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        salt = f"prior:{self.current_epoch}"
        loss = seeded_loss(self.prior, self.x0(self.prior, batch, salt), batch["sample_id"], salt)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["key"]))
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """The EMA follows optimizer steps (not batches, which differ under gradient accumulation)."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.prior.unet)

    def ema_prior(self) -> DiffusersPrior:
        return DiffusersPrior(self.ema.module, self.prior.schedule, self.prior.prompt_embeds, vae=self.prior.vae)

    @skips_empty_batches
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        prior = self.ema_prior()
        loss = seeded_loss(prior, self.x0(prior, batch, "val"), batch["sample_id"], "val")
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["key"]))

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self.prior.unet.parameters()

    @rank_zero_only
    def on_train_end(self) -> None:
        self.export(lambda path: save_pipeline_folder(path, self.ema.module, self.scheduler, self.prior.vae))
