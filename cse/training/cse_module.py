"""The CSE: a ControlNet trained beside a frozen prior on synthesised measurements."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from cse.images import labelled_grid
from cse.metrics import psnr
from cse.operators import Measurement
from cse.priors.conditioned import write_cse_record
from cse.priors.diffusers_prior import DiffusersPrior
from cse.records import Batch
from cse.samplers import Ancestral
from cse.seeding import randn, seed_from_key
from cse.training.common import ConfiguredOptimizer, generators, seeded_loss, skips_empty_batches
from cse.training.exports import ExportsWhenDone


def paper_adamw(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The paper's optimizer (Appendix B.2): AdamW at a constant 5e-6, betas (0.9, 0.999), weight
    decay 1e-2, eps 1e-8 (diffusers' ``train_controlnet.py`` defaults)."""
    return torch.optim.AdamW(params, lr=5e-6, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)


class CSEModule(ExportsWhenDone, ConfiguredOptimizer, LightningModule):
    """Train the conditional score estimator: a ControlNet beside the frozen prior, conditioned on
    the control image of a synthesised measurement (the paper's Sec. 4 and Appendix B.2; diffusers'
    ``train_controlnet.py``). Per batch: images x -> y = measurement(x) -> control = lift(y);
    x is encoded (a posterior sample of the VAE, as diffusers does) and noised to a random
    timestep, and ControlNet + UNet learn the eps (or v) target with MSE.

    Args:
        prior: the frozen prior; a ControlNet attached to it (``controlnet=`` of ``from_pretrained``)
            is fine-tuned, otherwise a new one is copied from its UNet.
        measurement: the degradation (operator and noise) whose measurements condition the CSE.
        optimizer: builds the optimizer of the ControlNet's parameters (default :func:`paper_adamw`;
            a config gives e.g. ``class_path: torch.optim.AdamW`` and ``init_args: {lr: 1.0e-5}``,
            the paper's reference runs).
        lr_scheduler: builds a schedule of that optimizer, stepped every optimizer step (default
            none: a constant rate).
        sample_latents: encode with a posterior sample of the VAE (diffusers); False: its mean.
        export_dir: where the final ControlNet is saved with ``save_pretrained`` (default: the
            run's folder, ``<default_root_dir>/controlnet``); it must be empty unless overwrite_export.
        validation_steps: ancestral steps of the restorations logged at validation.
        seed: all training randomness derives from it, the epoch and each sample id.
    """

    export_name = "controlnet"

    def __init__(
        self,
        prior: DiffusersPrior,
        measurement: Measurement,
        optimizer: OptimizerCallable = paper_adamw,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_latents: bool = True,
        export_dir: str | None = None,
        overwrite_export: bool = False,
        validation_steps: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.keep_settings(optimizer, lr_scheduler, ignore=["prior", "measurement"])
        self.prior, self.measurement = prior, measurement
        if prior.controlnet is None:
            prior.attach_controlnet()
        prior.controlnet.train().requires_grad_(True)
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

    def measure(self, images: Tensor, sample_ids: list[str], salt: str) -> Tensor:
        """``y`` of each image, its noise and operator randomness seeded as restoration seeds them
        (:meth:`Measurement.measure_keys`), by sample id and ``"<salt>:<seed>"``.

        One convention since this replaced the module's own seeds (``"<salt>:operator:<seed>"`` and
        ``"<salt>:measurement:<seed>"``): a CSE trained now sees other measurement draws than the
        same run did before, as the shipped digits CSEs were trained; restoration's are unchanged."""
        y, _ = self.measurement.measure_keys(images, sample_ids, f"{salt}:{self.hparams.seed}")
        return y

    def loss(self, batch: Batch, salt: str) -> Tensor:
        """MSE of the ControlNet-augmented UNet to its target, every draw seeded per sample."""
        images, ids = batch["image"], batch["sample_id"]
        control = self.measurement.lift(self.measure(images, ids, salt))
        with torch.no_grad():
            shape = self.prior.state_shape(images.shape)
            noise = (
                randn(generators(ids, f"{salt}:latent"), shape, like=images) if self.hparams.sample_latents else None
            )
            x0 = self.prior.encode(images, noise)
        return seeded_loss(self.prior, x0, ids, f"{salt}:{self.hparams.seed}", control)

    @skips_empty_batches
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        loss = self.loss(batch, f"train:{self.current_epoch}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["key"]))
        return loss

    @skips_empty_batches
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.log("val/loss", self.loss(batch, "val"), prog_bar=True, batch_size=len(batch["key"]), sync_dist=True)
        if batch_idx == 0:
            self.log_restorations(batch)

    @torch.no_grad()
    def log_restorations(self, batch: Batch) -> None:
        """Sample the CSE alone (the paper's "CSE" row) on held-out images and log a grid."""
        images, ids = batch["image"], batch["sample_id"]
        control = self.measurement.lift(self.measure(images, ids, "val"))
        seeds = [seed_from_key(s, "val:sample") for s in ids]
        shape, prior = self.prior.state_shape(images.shape), self.prior.conditioned(control)
        restored = Ancestral(self.hparams.validation_steps)(prior, None, None, seeds, shape=shape)
        self.log("val/psnr", psnr(restored, images).mean(), batch_size=len(ids), sync_dist=True)
        log_image = getattr(self.logger, "log_image", None)
        if log_image is not None and self.global_rank == 0:
            rows = [("source", images), ("control", control), ("CSE sample", restored)]
            log_image("val/source_control_sample", [labelled_grid(rows)], step=self.global_step)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.controlnet.parameters() if p.requires_grad]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only the trainable ControlNet: the frozen prior reloads from its own folder."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if not k.startswith("prior.controlnet.")]:
            del state[key]

    @rank_zero_only
    def on_train_end(self) -> None:
        self.export(self.save_cse)

    def save_cse(self, folder: Path) -> None:
        """The ControlNet (``save_pretrained``) and, beside it, the measurement it was trained with
        (``cse.json``), which a prior loading the folder checks a run's measurement against."""
        self.controlnet.save_pretrained(folder)
        write_cse_record(folder, self.measurement.describe())
