"""RestorationModule: ``python -m cse predict`` restores a dataset with any sampler (+CSE).

predict_step: measure ``y = A(x) + noise`` with the image's own seed -> run the sampler (with the
CSE's conditioning when a ControlNet is configured) -> return images and per-image statistics;
:class:`cse.callbacks.RestorationWriter` writes them and the metrics.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from tqdm.auto import tqdm

from cse.callbacks import RestorationWriter
from cse.metrics import diversity, psnr, ssim
from cse.models import conditioning
from cse.operators.base import Operator
from cse.operators.noise import GaussianNoise
from cse.priors.diffusers_prior import DiffusersPrior
from cse.samplers.common import Sampler, per_sample_norm
from cse.seeding import generators_from_seeds, seed_from_key


class RestorationModule(LightningModule):
    """Restore images measured by ``operator``.

    Args:
        operator: the degradation A.
        sampler: e.g. ``DPS``, ``DMAP``; with ``controlnet`` set it runs as "+CSE".
        pretrained: the prior (diffusers folder or hub id).
        controlnet: a trained CSE (folder or hub id), or None.
        noise_std: measurement noise.
        samples_per_image: k > 1 draws k restorations per measurement and records their
            per-pixel standard deviation (diversity, Observation III); the first is the recon.
        gradient_checkpointing: recompute activations (VAE decoder, UNet) in backward passes.
        seed: measurement noise and sampling seeds derive from it and each image's key.
        output_dir: where images and metrics go; images already restored there are skipped.
        lpips, fid: compute LPIPS per image and FID/KID over the set at the end.
        feature_network: FID/KID features (None: Inception), e.g. ``cse.metrics.PixelFeatures``.
        metric_weights_dir: folder of the metric networks' weight files (default: torch hub's).
    """

    def __init__(
        self,
        operator: Operator,
        sampler: Sampler,
        pretrained: str = "stabilityai/stable-diffusion-2-base",
        controlnet: str | None = None,
        noise_std: float = 0.0,
        samples_per_image: int = 1,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        output_dir: str = "outputs/restoration",
        lpips: bool = True,
        fid: bool = True,
        feature_network: nn.Module | None = None,
        metric_weights_dir: str | None = None,
    ) -> None:
        super().__init__()
        if samples_per_image < 1:
            raise ValueError(f"samples_per_image must be >= 1, got {samples_per_image}")
        self.save_hyperparameters(ignore=["operator", "sampler", "feature_network"])
        self.writer = RestorationWriter(output_dir, lpips, fid, feature_network, metric_weights_dir)
        self.operator, self.sampler, self.noise = operator, sampler, GaussianNoise(noise_std)
        self.prior = DiffusersPrior.from_pretrained(pretrained, controlnet=controlnet)
        if gradient_checkpointing:
            self.prior.enable_gradient_checkpointing()

    def configure_callbacks(self) -> list:
        return [self.writer]

    def measure(self, images: Tensor, keys: list[str], salt: str = "measurement") -> Tensor:
        """``y = A(x) + noise``, each image's noise from the seed of ``(salt, seed, key)``."""
        generators = generators_from_seeds([seed_from_key(k, f"{salt}:{self.hparams.seed}") for k in keys])
        return self.noise(self.operator(images), generators)

    def restore(self, y: Tensor, lifted: Tensor, keys: list[str], image_shape: tuple[int, ...]) -> Tensor:
        """``[k, B, C, H, W]``: k restorations of each measurement, all in one sampler batch;
        ``lifted`` is ``conditioning(operator, y)``, the CSE's input when a ControlNet is attached."""
        k = self.hparams.samples_per_image
        seeds = [seed_from_key(key, f"sample:{self.hparams.seed}:{j}") for j in range(k) for key in keys]
        y_k = y.repeat(k, *[1] * (y.ndim - 1))
        control = lifted.repeat(k, *[1] * (lifted.ndim - 1)) if self.prior.controlnet is not None else None
        with self.step_progress() as progress:
            shape = self.prior.latent_shape(image_shape)
            x = self.sampler(self.prior, self.operator, y_k, seeds, control=control, callback=progress, shape=shape)
        return x.reshape(k, len(keys), *x.shape[1:])

    @contextmanager
    def step_progress(self):
        """A second progress bar, over the diffusion steps of the current batch (rank 0 only)."""
        trainer = self._trainer
        if trainer is None or not trainer.is_global_zero or trainer.progress_bar_callback is None:
            yield None
            return
        bar = tqdm(total=self.sampler.num_steps, desc="diffusion steps", position=1, leave=False, dynamic_ncols=True)
        try:
            yield lambda state: bar.update(1)
        finally:
            bar.close()

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        todo = [i for i, key in enumerate(batch["key"]) if not self.writer.done(key)]
        if not todo:  # restored by an earlier run
            return {"key": [], "images": {}, "metrics": []}
        # Lightning predicts under inference_mode; guidance needs autograd, so step out of it
        # and copy the batch out of inference tensors.
        with torch.inference_mode(False):
            return self.restore_batch([batch["key"][i] for i in todo], batch["image"][todo].clone())

    def restore_batch(self, keys: list[str], images: Tensor) -> dict:
        y = self.measure(images, keys)
        lifted = conditioning(self.operator, y)
        self.prior.network_evaluations = self.prior.network_gradients = 0
        on_gpu = images.device.type == "cuda"
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(images.device)
        start = time.perf_counter()
        samples = self.restore(y, lifted, keys, images.shape)
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        recon = samples[0]
        with torch.no_grad():
            residual = per_sample_norm(self.operator(recon) - y)
        stats = {
            "seconds": seconds / len(keys),
            "network_evaluations": self.prior.network_evaluations / len(keys),
            "network_gradients": self.prior.network_gradients / len(keys),
            "peak_memory_mb": torch.cuda.max_memory_allocated(images.device) / 2**20 if on_gpu else None,
            "batch_size": len(keys),
        }
        per_image = {"psnr": psnr(recon, images), "ssim": ssim(recon, images), "residual": residual}
        out_images = {"source": images, "measurement": y, "lifted": lifted, "recon": recon}
        if samples.shape[0] > 1:
            per_pixel_std = torch.stack([diversity(samples[:, i]) for i in range(len(keys))])
            out_images["diversity"] = per_pixel_std
            per_image["diversity"] = per_pixel_std.flatten(1).mean(1)
        metrics = [
            {"key": key, **{n: float(v[i]) for n, v in per_image.items()}, **stats} for i, key in enumerate(keys)
        ]
        return {"key": keys, "images": out_images, "metrics": metrics}
