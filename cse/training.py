"""Training: the CSE (a ControlNet beside a frozen prior), a pixel-space prior from scratch, and the
small classifier whose features serve FID/KID on digits. ``python -m cse fit --config ...``.

Every random draw of training is seeded by (seed, epoch, sample id) — timesteps, diffusion noise,
measurement noise, latent samples and augmentation — so a run resumed mid-epoch continues exactly
as an uninterrupted one (the data loader's position is saved in the checkpoint, see cse.data).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_only
from safetensors.torch import save_file
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cse.features import DigitsClassifier
from cse.images import labelled_grid, usual_file_mode
from cse.metrics import psnr
from cse.operators import Measurement
from cse.paths import project_path, where
from cse.priors.conditioned import write_cse_record
from cse.priors.diffusers_prior import DiffusersPrior, save_pipeline_folder, sd_scheduler
from cse.priors.schedule import DiscreteSchedule
from cse.records import Batch
from cse.samplers import Ancestral
from cse.seeding import generators_from_seeds, randn, seed_from_key


def generators(sample_ids: list[str], salt: str) -> list[torch.Generator]:
    """One generator per sample, seeded by ``(salt, sample id)``."""
    return generators_from_seeds([seed_from_key(s, salt) for s in sample_ids])


def seeded_loss(
    prior: DiffusersPrior, x0: Tensor, sample_ids: list[str], salt: str, control: Tensor | None = None
) -> Tensor:
    """The prior's training loss (:meth:`DiffusersPrior.loss`), averaged over the batch, at a timestep
    and noise drawn per sample from the seed of ``(salt, sample id)``."""
    draws = generators(sample_ids, f"{salt}:t")
    t = torch.cat([torch.randint(0, prior.schedule.num_train_steps, (1,), generator=g) for g in draws])
    return prior.loss(x0, t.to(x0.device), randn(draws, x0.shape[1:], like=x0), control).mean()


def readable(path: Path) -> None:
    """Give exported files the permissions of any file the user makes (safetensors writes 0600)."""
    mode = usual_file_mode()
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        file.chmod(mode)


class ExportsWhenDone:
    """For trainers that save what they trained at the end: into ``export_dir`` (a folder, or a file
    for single-file exports), by default ``<default_root_dir>/<export_name>``, refusing before
    training a file or a folder that holds files unless ``overwrite_export`` (hyper-parameters of the
    module). A resumed run replaces its own export (the default one, in its folder) without asking."""

    export_name = "model"

    def export_path(self) -> Path:
        given = self.hparams.export_dir
        return Path(given) if given else Path(self.trainer.default_root_dir) / self.export_name

    def export(self, save: Callable[[Path], object]) -> None:
        """``save(path)`` into the export path (its folder made first), readable by others."""
        path = self.export_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        save(path)
        readable(path)

    def resumes_own_run(self) -> bool:
        """Whether this fit resumes a checkpoint its own checkpoint callback wrote (not another run's)."""
        ckpt, callback = self.trainer.ckpt_path, self.trainer.checkpoint_callback
        if ckpt is None or callback is None or callback.dirpath is None:
            return False
        return Path(ckpt).resolve().parent == Path(callback.dirpath).resolve()

    def on_fit_start(self) -> None:
        """Before the first step (and after a checkpoint is restored, so a resumed run is known)."""
        path = self.export_path()
        taken = path.is_file() or (path.is_dir() and any(path.iterdir()))
        own = not self.hparams.export_dir and self.resumes_own_run()
        if taken and not own and not self.hparams.overwrite_export:
            raise FileExistsError(
                f"the export {path} already holds a model; choose another export_dir, or set overwrite_export=true "
                "to replace it"
            )


class CSEModule(ExportsWhenDone, LightningModule):
    """Train the conditional score estimator: a ControlNet beside the frozen prior, conditioned on
    the control image of a synthesised measurement (the paper's Sec. 4 and Appendix B.2; diffusers'
    ``train_controlnet.py``). Per batch: images x -> y = measurement(x) -> control = lift(y);
    x is encoded (a posterior sample of the VAE, as diffusers does) and noised to a random
    timestep, and ControlNet + UNet learn the eps (or v) target with MSE.

    Args:
        prior: the frozen prior; a ControlNet attached to it (``controlnet=`` of ``from_pretrained``)
            is fine-tuned, otherwise a new one is copied from its UNet.
        measurement: the degradation (operator and noise) whose measurements condition the CSE.
        learning_rate: constant AdamW rate (the paper: 5e-6; its reference runs: 1e-5).
        weight_decay, betas: AdamW's.
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
        learning_rate: float = 5e-6,
        weight_decay: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        sample_latents: bool = True,
        export_dir: str | None = None,
        overwrite_export: bool = False,
        validation_steps: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["prior", "measurement"])
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
        """``y`` of each image, its noise (and operator randomness) seeded per sample id."""
        seeds = [seed_from_key(s, f"{salt}:operator:{self.hparams.seed}") for s in sample_ids]
        measurement = self.measurement.bind(seeds, images.shape)
        return measurement(images, generators(sample_ids, f"{salt}:measurement:{self.hparams.seed}"))

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

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        if not batch["key"]:  # every sample of the batch was unusable (each was warned about)
            return None
        loss = self.loss(batch, f"train:{self.current_epoch}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["key"]))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if not batch["key"]:
            return
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

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        params = [p for p in self.controlnet.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=hp.learning_rate, betas=tuple(hp.betas), weight_decay=hp.weight_decay)

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


def load_vae(path: str) -> AutoencoderKL:
    """A trained ``AutoencoderKL`` folder (e.g. exported by :class:`AutoencoderModule`)."""
    folder = project_path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no AutoencoderKL folder at {where(path)}; train one with an AutoencoderModule config")
    return AutoencoderKL.from_pretrained(folder).requires_grad_(False).eval()


class PriorModule(ExportsWhenDone, LightningModule):
    """Train a diffusion prior from scratch: any diffusers ``UNet2DConditionModel`` (given in the
    config), in pixel space or, with ``vae``, on the latents of a trained ``AutoencoderKL`` (a
    posterior draw per image, as diffusers trains SD); SD2's schedule and the prior's own loss; an
    exponential moving average of the weights, exported as a diffusers folder that
    ``DiffusersPrior.from_pretrained`` loads.

    The UNet sees the empty prompt as one zero token of its ``cross_attention_dim``.
    Args:
        vae: folder of a trained, frozen ``AutoencoderKL`` (None: a pixel-space prior).
    """

    export_name = "prior"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: str | None = None,
        learning_rate: float = 3e-4,
        ema_decay: float = 0.999,
        export_dir: str | None = None,
        overwrite_export: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["unet"])
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

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        if not batch["key"]:
            return None
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

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if not batch["key"]:
            return
        prior = self.ema_prior()
        loss = seeded_loss(prior, self.x0(prior, batch, "val"), batch["sample_id"], "val")
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["key"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.prior.unet.parameters(), lr=self.hparams.learning_rate)

    @rank_zero_only
    def on_train_end(self) -> None:
        self.export(lambda path: save_pipeline_folder(path, self.ema.module, self.scheduler, self.prior.vae))


class AutoencoderModule(ExportsWhenDone, LightningModule):
    """Train a diffusers ``AutoencoderKL`` for a latent prior: reconstruction MSE plus ``kl_weight``
    times the KL divergence of its posterior to N(0, I), the decoder seeing a posterior draw seeded
    per sample. At the end its ``scaling_factor`` is set to 1 / std of the latents of the training
    images (as SD's 0.18215 was chosen), so that the prior's latents have unit variance, and it is
    exported with ``save_pretrained``.

    Args (the architecture, as ``AutoencoderKL``'s; images shrink by 2 per level after the first):
        block_out_channels, latent_channels, layers_per_block, norm_num_groups, sample_size.
    """

    export_name = "vae"

    def __init__(
        self,
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        latent_channels: int = 4,
        layers_per_block: int = 1,
        norm_num_groups: int = 16,
        sample_size: int = 32,
        learning_rate: float = 1e-3,
        kl_weight: float = 1e-6,
        export_dir: str | None = None,
        overwrite_export: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
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

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        if not batch["key"]:
            return None
        recon, kl = self.reconstruct(batch, f"vae:{self.current_epoch}")
        mse = F.mse_loss(recon, batch["image"])
        self.log_dict({"train/mse": mse, "train/kl": kl}, prog_bar=True, batch_size=len(batch["key"]))
        return mse + self.hparams.kl_weight * kl

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if not batch["key"]:
            return
        with torch.no_grad():
            recon = self.vae.decode(self.vae.encode(batch["image"]).latent_dist.mean).sample
        self.log("val/psnr", psnr(recon, batch["image"]).mean(), prog_bar=True, batch_size=len(batch["key"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.vae.parameters(), lr=self.hparams.learning_rate)

    @torch.no_grad()
    def latent_std(self) -> float:
        """Std of the posterior means of the training images (the scale SD's factor normalises)."""
        self.vae.eval()
        means = [
            self.vae.encode(b["image"].to(self.device)).latent_dist.mean
            for b in self.trainer.datamodule.train_dataloader()
            if b["key"]
        ]
        return torch.cat(means).std().item()

    def on_train_end(self) -> None:
        std = self.latent_std()
        if self.trainer.is_global_zero:
            self.vae.register_to_config(scaling_factor=1.0 / std)
            self.export(self.vae.save_pretrained)


class ClassifierModule(ExportsWhenDone, LightningModule):
    """Train :class:`cse.features.DigitsClassifier` on labelled digits (``label_key: label`` in the
    data), with shifts of up to one pixel so that its features do not hinge on exact pixels."""

    export_name = "classifier.safetensors"

    def __init__(
        self, learning_rate: float = 1e-3, export_dir: str | None = None, overwrite_export: bool = False
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.classifier = DigitsClassifier()

    def step(self, batch: Batch, name: str) -> Tensor:
        x, labels = batch["image"], batch["label"]
        if name == "train":  # each sample's shift seeded by its id and the epoch
            shifts = [
                torch.randint(-1, 2, (2,), generator=g)
                for g in generators(batch["sample_id"], f"shift:{self.current_epoch}")
            ]
            x = torch.stack(
                [torch.roll(image, tuple(s.tolist()), dims=(-2, -1)) for image, s in zip(x, shifts, strict=True)]
            )
        logits = self.classifier(x)
        loss = F.cross_entropy(logits, labels)
        self.log(f"{name}/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log(f"{name}/accuracy", (logits.argmax(1) == labels).float().mean(), prog_bar=True, batch_size=len(labels))
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.classifier.parameters(), lr=self.hparams.learning_rate)

    @rank_zero_only
    def on_train_end(self) -> None:
        self.export(lambda path: save_file(self.classifier.state_dict(), path))
