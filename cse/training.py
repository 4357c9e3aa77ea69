"""CSEModule: fit the ControlNet conditional score estimator (the paper's Sec. 4 recipe).

Per batch: augmented images x -> measurement y = A(x) + noise -> conditioning lift(y); x is
encoded, noised to a random timestep, and the ControlNet beside the frozen UNet learns to
predict the noise (or v) with MSE, as diffusers' ControlNet training does.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from cse.models import build_controlnet, conditioning
from cse.operators.base import Operator
from cse.operators.noise import GaussianNoise
from cse.priors.diffusers_prior import DiffusersPrior
from cse.samplers import Ancestral
from cse.seeding import generators_from_seeds, randn, seed_from_key


class CSEModule(LightningModule):
    """Train a CSE for one operator.

    Args:
        pretrained: the prior, a diffusers folder or hub id (SD2-base by default).
        operator: the degradation A whose measurements condition the CSE.
        noise_std: measurement noise added to A(x) when synthesising y.
        controlnet: start from this ControlNet (folder or hub id) instead of the UNet's copy.
        learning_rate: constant AdamW rate (the paper: 5e-6; its reference runs: 1e-5).
        weight_decay, betas: AdamW's.
        gradient_checkpointing: recompute UNet/ControlNet activations in backward.
        export_dir: where the final ControlNet is saved with ``save_pretrained`` (None: not).
        validation_steps: ancestral steps of the restorations logged at validation.
        seed: all training randomness (timesteps, noise) derives from it, the step and the key.
    """

    def __init__(
        self,
        operator: Operator,
        pretrained: str = "stabilityai/stable-diffusion-2-base",
        noise_std: float = 0.0,
        controlnet: str | None = None,
        learning_rate: float = 5e-6,
        weight_decay: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        gradient_checkpointing: bool = False,
        export_dir: str | None = None,
        validation_steps: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["operator"])
        self.operator = operator
        self.noise = GaussianNoise(noise_std)
        self.prior = DiffusersPrior.from_pretrained(pretrained, controlnet=controlnet)
        if self.prior.controlnet is None:
            self.prior.controlnet = build_controlnet(self.prior)
        self.prior.controlnet.train().requires_grad_(True)
        if gradient_checkpointing:
            self.prior.enable_gradient_checkpointing()
        self.strict_loading = False  # checkpoints hold the ControlNet only (see on_save_checkpoint)

    @property
    def controlnet(self):
        return self.prior.controlnet

    def train(self, mode: bool = True) -> CSEModule:
        """Only the ControlNet ever trains; the prior's networks stay in eval mode."""
        super().train(mode)
        for module in (self.prior.unet, self.prior.vae):
            if module is not None:
                module.eval()
        return self

    def measure(self, images: Tensor, keys: list[str], salt: str) -> tuple[Tensor, Tensor]:
        """``(y, lift(y))`` with each image's noise from its own seed."""
        y = self.operator(images)
        y = self.noise(y, generators_from_seeds([seed_from_key(k, salt) for k in keys]))
        return y, conditioning(self.operator, y)

    def denoising_loss(self, images: Tensor, keys: list[str], salt: str) -> Tensor:
        """MSE of the ControlNet-augmented UNet to the eps (or v) target at random timesteps."""
        _, control = self.measure(images, keys, salt)
        with torch.no_grad():
            x0 = self.prior.encode(images)
        generators = generators_from_seeds([seed_from_key(k, f"{salt}:t") for k in keys])
        t = torch.cat([torch.randint(0, self.prior.schedule.num_train_steps, (1,), generator=g) for g in generators])
        x_t, target = self.prior.training_pair(x0, t.to(self.device), randn(generators, x0.shape[1:], like=x0))
        prediction = self.prior.network(x_t, t.to(self.device), control)
        return F.mse_loss(prediction.float(), target.float())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        salt = f"train:{self.hparams.seed}:{self.current_epoch}:{batch_idx}"
        loss = self.denoising_loss(batch["image"], batch["key"], salt)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["key"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images, keys = batch["image"], batch["key"]
        loss = self.denoising_loss(images, keys, f"val:{self.hparams.seed}")
        self.log("val/loss", loss, prog_bar=True, batch_size=len(keys), sync_dist=True)
        if batch_idx == 0:
            self.log_restorations(images, keys)

    @torch.no_grad()
    def log_restorations(self, images: Tensor, keys: list[str]) -> None:
        """Sample the CSE alone (the paper's "CSE" row) on held-out images and log a grid."""
        y, control = self.measure(images, keys, f"val:{self.hparams.seed}")
        seeds = [seed_from_key(k, "val:sample") for k in keys]
        restored = Ancestral(self.hparams.validation_steps)(self.prior, None, None, seeds, control=control)
        self.log("val/psnr", psnr(restored, images), batch_size=len(keys), sync_dist=True)
        log_image = getattr(self.logger, "log_image", None)
        if log_image is not None and self.global_rank == 0:
            rows = [images, control, restored.clamp(-1, 1)]
            log_image("val/source_conditioning_restored", [grid(rows)], step=self.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        params = [p for p in self.controlnet.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=hp.learning_rate, betas=tuple(hp.betas), weight_decay=hp.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only the trainable ControlNet: the frozen prior reloads from ``pretrained``."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if not k.startswith("prior.controlnet.")]:
            del state[key]

    @rank_zero_only
    def on_train_end(self) -> None:
        if self.hparams.export_dir:
            export_controlnet(self.controlnet, self.hparams.export_dir)


def export_controlnet(controlnet, path: str | os.PathLike) -> Path:
    """``save_pretrained`` (safetensors): loadable by ``ControlNetModel.from_pretrained``."""
    path = Path(path)
    controlnet.save_pretrained(path)
    return path


def psnr(x: Tensor, reference: Tensor) -> Tensor:
    """Mean PSNR in dB of images in [-1, 1], measured on [0, 1]."""
    mse = ((x.clamp(-1, 1) - reference) / 2).square().flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).mean()


def grid(rows: list[Tensor]) -> Tensor:
    """Rows of ``[B, C, H, W]`` images in [-1, 1] -> one ``[C, rows*H, B*W]`` image in [0, 1]."""
    size = rows[0].shape[-2:]
    rows = [F.interpolate(r.float().cpu(), size=size, mode="nearest") for r in rows]
    return torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2).add(1).div(2).clamp(0, 1)
