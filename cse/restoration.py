"""RestorationModule: ``python -m cse predict`` restores a dataset with any sampler and prior.

predict_step: measure ``y = measurement(x)`` with the image's own seed -> run the sampler on the
prior with the CSE's control image ``lift(y)`` bound (``prior.conditioned``; the prior itself when
no CSE is attached) -> a :class:`cse.records.Restoration`
of images and per-image statistics. Writing is the job of a callback
(:class:`cse.callbacks.RestorationWriter`, given in the config).
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cse.metrics import diversity, psnr, ssim
from cse.operators import Measurement
from cse.priors import CountingPrior, Prior
from cse.records import RESIDUAL_WARNING, Batch, ImageMetrics, Restoration
from cse.samplers.common import Sampler, per_sample_norm
from cse.seeding import seed_from_key


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: 0.42 s, 3.5 min, 2.1 h."""
    if seconds < 60:
        return f"{seconds:.2g} s"
    return f"{seconds / 60:.2g} min" if seconds < 3600 else f"{seconds / 3600:.2g} h"


class RestorationModule(LightningModule):
    """Restore images measured by ``measurement`` with ``sampler`` over ``prior``.

    Args:
        prior: e.g. ``DiffusersPrior.from_pretrained(...)``; with a ControlNet attached, every
            sampler runs as its "+CSE" variant, the CSE seeing ``measurement.lift(y)``; a CSE
            recorded as trained for another operator is refused here.
        measurement: the operator and noise model that make ``y`` from each image.
        sampler: e.g. ``DPS``, ``DMAP`` (see ``cse.samplers``).
        samples_per_image: k > 1 draws k restorations per measurement and records their
            per-pixel standard deviation (diversity, Observation III); the first is the recon.
        seed: measurement noise and sampling seeds derive from it and each image's key.
    """

    def __init__(
        self,
        prior: Prior,
        measurement: Measurement,
        sampler: Sampler,
        samples_per_image: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if samples_per_image < 1:
            raise ValueError(f"samples_per_image must be >= 1, got {samples_per_image}")
        prior.check_measurement(measurement.describe())
        self.prior, self.measurement, self.sampler = prior, measurement, sampler
        self.samples_per_image, self.seed = samples_per_image, seed

    def settings(self) -> dict:
        """Everything that decides the outputs (recorded with them, and compared on reruns)."""
        return {
            "prior": self.prior.describe(),
            "measurement": repr(self.measurement),
            "sampler": repr(self.sampler),
            "samples_per_image": self.samples_per_image,
            "seed": self.seed,
        }

    def measure(self, images: Tensor, keys: list[str]) -> tuple[Tensor, Measurement]:
        """``y = measurement(x)``, each image's noise (and operator) from the seed of ``(seed, key)``;
        also the measurement fixed for these images."""
        return self.measurement.measure_keys(images, keys, str(self.seed))

    def repeat(self, t: Tensor) -> Tensor:
        """``[B, ...]`` -> ``[k B, ...]``: the batch once per sample drawn of each image."""
        return t.repeat(self.samples_per_image, *[1] * (t.ndim - 1))

    def restore(self, prior: Prior, y: Tensor, keys: list[str], image_shape: torch.Size) -> Tensor:
        """``[k, B, C, H, W]``: k restorations of each measurement, drawn in one sampler batch on
        ``prior`` (for "+CSE", with the control images of ``repeat(y)`` bound)."""
        k = self.samples_per_image
        seeds = [seed_from_key(key, f"sample:{self.seed}:{j}") for j in range(k) for key in keys]
        operator = self.measurement.bind_keys(keys * k, image_shape, str(self.seed)).operator
        with self.step_progress() as progress:
            x = self.sampler(
                prior, operator, self.repeat(y), seeds, callback=progress, shape=prior.state_shape(image_shape)
            )
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

    def predict_step(self, batch: Batch, batch_idx: int) -> Restoration:
        # Lightning predicts under inference_mode; guidance needs autograd, so step out of it
        # and copy the batch out of inference tensors.
        with torch.inference_mode(False):
            if batch_idx == 0 and len(batch["key"]):
                self.say_cost(batch["image"][:1].clone())
            try:
                restoration = self.restore_batch(batch["key"], batch["image"].clone())
            except torch.cuda.OutOfMemoryError:
                restoration = None  # leave the handler first: its traceback holds the failed batch's memory
            if restoration is None:
                raise torch.cuda.OutOfMemoryError(self.memory_advice(batch["image"]))
        restoration.skipped = list(batch["skipped"])
        return restoration

    def memory_advice(self, images: Tensor) -> str:
        """After running out of CUDA memory: measure one sampler step on one image and say which
        batch size fits."""
        device, k = images.device, self.samples_per_image
        gc.collect()
        torch.cuda.empty_cache()
        total, weights = torch.cuda.get_device_properties(device).total_memory, torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        asked = f"CUDA ran out of memory restoring a batch of {len(images)} image(s) x {k} sample(s)"
        try:
            self.probe_step(images[:1])
        except torch.cuda.OutOfMemoryError:
            return (
                f"{asked}, and one image does not fit either: try torch_dtype bfloat16 and "
                "gradient_checkpointing=true on the prior (--model.init_args.prior.init_args...)"
            )
        per_image = max(1, torch.cuda.max_memory_allocated(device) - weights)
        fits = int((0.9 * total - weights) // (per_image * k))
        return (
            f"{asked}: one image takes about {per_image / 2**20:.0f} MiB beyond the {weights / 2**20:.0f} MiB "
            f"of weights on this {total / 2**30:.0f} GiB device, so --data.init_args.batch_size={max(1, fits)} fits"
        )

    def probe_step(self, image: Tensor) -> None:
        """One sampler step, at the middle of the trajectory, for one image (its memory peak)."""
        y, measurement = self.measure(image, ["probe"])
        prior = self.prior.conditioned(measurement.lift(y))
        shape = prior.state_shape(image.shape)
        self.sampler.middle_step(prior, self.sampler.context(prior, measurement.operator, y, [0], shape))

    def say_cost(self, image: Tensor) -> None:
        """Before the first batch, what the run will cost: one sampler step on one image, timed (the
        second of two, past any warm-up or compilation), times the steps, samples and images."""
        self.probe_step(image)
        start = time.perf_counter()
        self.probe_step(image)
        step = time.perf_counter() - start
        per_image = step * self.sampler.num_steps * self.samples_per_image
        trainer = self._trainer
        loaders = trainer.predict_dataloaders if trainer is not None else None
        count = len(loaders.dataset) if isinstance(loaders, DataLoader) else None
        total = f", about {duration(per_image * count)} for the {count} images" if count else ""
        rank_zero_info(
            f"{type(self.sampler).__name__}: {self.sampler.num_steps} steps x {self.samples_per_image} sample(s) "
            f"per image; one step on one image took {step:.3g} s, so up to {duration(per_image)} per image{total} "
            "(less at larger batch sizes)"
        )

    def restore_batch(self, keys: list[str], images: Tensor) -> Restoration:
        if not keys:
            empty = images.new_empty(0, *images.shape[1:]).cpu()
            return Restoration([], empty, empty, empty, empty, [])
        y, measurement = self.measure(images, keys)
        control = measurement.lift(y)
        counted = CountingPrior(self.prior.conditioned(self.repeat(control)))
        on_gpu = images.device.type == "cuda"
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(images.device)
        start = time.perf_counter()
        samples = self.restore(counted, y, keys, images.shape)
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        recon = samples[0]
        with torch.no_grad():
            residual = per_sample_norm(measurement.operator(recon) - y)
        relative = residual / per_sample_norm(y).clamp_min(1e-12)
        self.warn_if_inconsistent(residual, relative)
        cost = {
            "seconds": seconds / len(keys),
            "network_evaluations": counted.evaluations / len(keys),
            "network_gradients": counted.gradients / len(keys),
            "peak_memory_mb": torch.cuda.max_memory_allocated(images.device) / 2**20 if on_gpu else None,
            "batch_size": len(keys),
        }
        per_image = {"psnr": psnr(recon, images), "ssim": ssim(recon, images), "residual": residual}
        per_image["residual_relative"] = relative
        maps = None
        if samples.shape[0] > 1:
            maps = torch.stack([diversity(samples[:, i]) for i in range(len(keys))])
            per_image["diversity"] = maps.flatten(1).mean(1)
        metrics = [
            ImageMetrics(key=key, **{n: float(v[i]) for n, v in per_image.items()}, **cost)
            for i, key in enumerate(keys)
        ]
        cpu = lambda t: t.detach().float().cpu()  # noqa: E731
        return Restoration(
            keys, cpu(images), cpu(y), cpu(control), cpu(recon), metrics, None if maps is None else cpu(maps)
        )

    def warn_if_inconsistent(self, residual: Tensor, relative: Tensor) -> None:
        """A restoration whose ``||A(x) - y||`` (``residual``) is far above ``||y||`` (``relative``:
        their ratio) is not one: say so (the summary flags it too, see ``residual_flag``)."""
        far = relative > RESIDUAL_WARNING
        if far.any():
            rank_zero_warn(
                f"{int(far.sum())} restoration(s) have a residual ||A(x) - y|| over {RESIDUAL_WARNING:g}x the "
                f"measurement's norm (max {float(residual.max()):.3g}, {float(relative.max()):.3g}x): "
                "the step size is likely too large"
            )
