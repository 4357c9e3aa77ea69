"""CSEModule: fit the ControlNet conditional score estimator (the paper's Sec. 4 recipe).

Per batch: augmented images x -> measurement y = A(x) + noise -> conditioning lift(y); x is
encoded, noised to a random timestep, and the ControlNet beside the frozen UNet learns to
predict the noise (or v) with MSE, as diffusers' ControlNet training does.

It is a :class:`~cse.restoration.RestorationModule` whose ControlNet trains: ``predict`` with the
same config restores with the CSE alone (ancestral sampling, the paper's "CSE" row).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from cse.callbacks import grid
from cse.metrics import psnr
from cse.models import build_controlnet, conditioning
from cse.operators.base import Operator
from cse.priors.diffusers_prior import DiffusersPrior
from cse.restoration import RestorationModule
from cse.samplers import Ancestral
from cse.samplers.common import Sampler
from cse.seeding import generators_from_seeds, randn, seed_from_key


class CSEModule(RestorationModule):
    """Train a CSE for one operator.

    Args:
        operator: the degradation A whose measurements condition the CSE.
        pretrained: the prior, a diffusers folder or hub id (SD2-base by default).
        noise_std: measurement noise added to A(x) when synthesising y.
        controlnet: start from this ControlNet (folder or hub id) instead of the UNet's copy.
        learning_rate: constant AdamW rate (the paper: 5e-6; its reference runs: 1e-5).
        weight_decay, betas: AdamW's.
        gradient_checkpointing: recompute UNet/ControlNet activations in backward.
        export_dir: where the final ControlNet is saved with ``save_pretrained`` (None: not).
        validation_steps: ancestral steps of the restorations logged at validation.
        seed: all training randomness (timesteps, noise) derives from it, the step and the key.
        sampler: what ``predict`` runs (default: 500 ancestral steps with the CSE); the remaining
            arguments configure prediction as in :class:`~cse.restoration.RestorationModule`.
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
        sampler: Sampler | None = None,
        output_dir: str = "outputs/cse",
        samples_per_image: int = 1,
        lpips: bool = True,
        fid: bool = True,
        feature_network: nn.Module | None = None,
        metric_weights_dir: str | None = None,
    ) -> None:
        super().__init__(
            operator,
            sampler or Ancestral(500),
            pretrained=pretrained,
            controlnet=controlnet,
            noise_std=noise_std,
            samples_per_image=samples_per_image,
            seed=seed,
            output_dir=output_dir,
            lpips=lpips,
            fid=fid,
            feature_network=feature_network,
            metric_weights_dir=metric_weights_dir,
        )
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

    def denoising_loss(self, images: Tensor, keys: list[str], salt: str) -> Tensor:
        """MSE of the ControlNet-augmented UNet to the eps (or v) target at random timesteps."""
        control = conditioning(self.operator, self.measure(images, keys, salt))
        with torch.no_grad():
            x0 = self.prior.encode(images)
        return denoising_loss(self.prior, x0, keys, f"{salt}:{self.hparams.seed}", control)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        if not batch["key"]:  # every sample of the batch was unreadable (warned about in cse.data)
            return None
        loss = self.denoising_loss(batch["image"], batch["key"], f"train:{self.current_epoch}:{batch_idx}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["key"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images, keys = batch["image"], batch["key"]
        if not keys:
            return
        loss = self.denoising_loss(images, keys, "val")
        self.log("val/loss", loss, prog_bar=True, batch_size=len(keys), sync_dist=True)
        if batch_idx == 0:
            self.log_restorations(images, keys)

    @torch.no_grad()
    def log_restorations(self, images: Tensor, keys: list[str]) -> None:
        """Sample the CSE alone (the paper's "CSE" row) on held-out images and log a grid."""
        control = conditioning(self.operator, self.measure(images, keys, "val"))
        seeds = [seed_from_key(k, "val:sample") for k in keys]
        shape = self.prior.latent_shape(images.shape)
        restored = Ancestral(self.hparams.validation_steps)(self.prior, None, None, seeds, control=control, shape=shape)
        self.log("val/psnr", psnr(restored, images).mean(), batch_size=len(keys), sync_dist=True)
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


def denoising_loss(
    prior: DiffusersPrior, x0: Tensor, keys: list[str], salt: str, control: Tensor | None = None
) -> Tensor:
    """The diffusion training loss: MSE of the network to its eps (or v) target, at a timestep and
    noise drawn per sample from the seed of ``(salt, key)`` (so a resumed run repeats them)."""
    generators = generators_from_seeds([seed_from_key(k, f"{salt}:t") for k in keys])
    t = torch.cat([torch.randint(0, prior.schedule.num_train_steps, (1,), generator=g) for g in generators]).to(
        x0.device
    )
    x_t, target = prior.training_pair(x0, t, randn(generators, x0.shape[1:], like=x0))
    return F.mse_loss(prior.network(x_t, t, control).float(), target.float())


def export_controlnet(controlnet, path: str | os.PathLike) -> Path:
    """``save_pretrained`` (safetensors): loadable by ``ControlNetModel.from_pretrained``."""
    path = Path(path)
    controlnet.save_pretrained(path)
    return path
