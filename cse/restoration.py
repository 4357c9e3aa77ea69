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
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cse.errors import InputError
from cse.measurements import MEASURED_FIELDS, MeasuredBatch, MeasurementDataModule
from cse.metrics import diversity, psnr, ssim
from cse.operators import Measurement, Operator
from cse.operators.measured import (
    Clipped,
    Cropped,
    centred_window,
    check_restorable,
    image_size,
    padded_size,
    with_parameters,
)
from cse.priors import CountingPrior, Prior
from cse.records import RESIDUAL_WARNING, Batch, ImageMetrics, Restoration
from cse.samplers.common import Sampler, per_sample_norm, per_sample_std
from cse.seeding import seed_from_key


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: 0.42 s, 3.5 min, 2.1 h."""
    if seconds < 60:
        return f"{seconds:.2g} s"
    return f"{seconds / 60:.2g} min" if seconds < 3600 else f"{seconds / 3600:.2g} h"


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator's."""
    message = str(error)
    cpu = "can't allocate memory" in message or "out of memory" in message
    return isinstance(error, torch.cuda.OutOfMemoryError) or cpu


def quality(recon: Tensor, reference: Tensor | None) -> dict[str, float]:
    """PSNR and SSIM of one restoration ``[C, H, W]`` against its clean reference (none without one,
    or with one of another size)."""
    if reference is None or reference.shape != recon.shape:
        return {}
    recon, reference = recon[None], reference[None].to(recon)
    return {"psnr": float(psnr(recon, reference)[0]), "ssim": float(ssim(recon, reference)[0])}


@dataclass
class Problem:
    """One batch to restore, of one image size.

    ``operator`` maps the sampler's images to the measurements ``y`` ``[B, ...]``; ``repeated`` is
    the same for the ``k B`` samples drawn at once; ``control`` the CSE's control images;
    ``image_shape`` the shape of the images the sampler makes (padded, when the networks need it),
    ``crop`` takes the restored image out of one; ``noise_std`` the noise std of each measurement.
    """

    y: Tensor
    operator: Operator
    repeated: Operator
    control: Tensor
    image_shape: tuple[int, ...]
    noise_std: Tensor | float | list[float] = 0.0
    crop: Callable[[Tensor], Tensor] = lambda x: x  # noqa: E731
    size: tuple[int, int] | None = None  # of the restored images (default: image_shape's)

    def __post_init__(self) -> None:
        self.noise_std = per_sample_std(torch.as_tensor(self.noise_std), self.y.shape[0], self.y)
        self.size = self.size or tuple(self.image_shape[-2:])


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
        max_pixels: a given measurement whose restoration (padded) has more pixels is skipped
            with the reason, before any memory is spent on it.
    """

    def __init__(
        self,
        prior: Prior,
        measurement: Measurement,
        sampler: Sampler,
        samples_per_image: int = 1,
        seed: int = 0,
        max_pixels: int = 4096 * 4096,
    ) -> None:
        super().__init__()
        if samples_per_image < 1:
            raise ValueError(f"samples_per_image must be >= 1, got {samples_per_image}")
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        prior.check_measurement(measurement.describe())
        self.prior, self.measurement, self.sampler = prior, measurement, sampler
        self.samples_per_image, self.seed, self.max_pixels = samples_per_image, seed, max_pixels

    def setup(self, stage: str) -> None:
        """Measurements as given need an operator whose parameters they come with (refused in one line)."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if stage == "predict" and isinstance(datamodule, MeasurementDataModule):
            check_restorable(self.measurement.operator)

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

    def restore(self, prior: Prior, problem: Problem, keys: list[str]) -> Tensor:
        """``[k, B, C, H, W]``: k restorations of each measurement, drawn in one sampler batch on
        ``prior`` (for "+CSE", with the control images of ``repeat(y)`` bound)."""
        k = self.samples_per_image
        seeds = [seed_from_key(key, f"sample:{self.seed}:{j}") for j in range(k) for key in keys]
        shape = prior.state_shape(problem.image_shape)
        with self.step_progress() as progress:
            x = self.sampler(
                prior,
                problem.repeated,
                self.repeat(problem.y),
                seeds,
                callback=progress,
                shape=shape,
                noise_std=self.repeat(problem.noise_std),
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

    def predict_step(self, batch: Batch | MeasuredBatch, batch_idx: int) -> Restoration:
        # Lightning predicts under inference_mode; guidance needs autograd, so step out of it
        # and copy the batch out of inference tensors.
        with torch.inference_mode(False):
            if "measurement" in batch:  # measurements as given (cse.measurements)
                return self.restore_measured(batch)
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

    def restore_measured(self, batch: MeasuredBatch) -> Restoration:
        """Measurements as given, restored together by size. A group that cannot be restored (a
        kernel for a task without one, too large for the memory) is skipped with the reason; what
        was restored before it is kept."""
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, y in enumerate(batch["measurement"]):
            by_size.setdefault(tuple(y.shape), []).append(i)
        parts, skipped = [], list(batch["skipped"])
        for indices in by_size.values():
            group = {name: [batch[name][i] for i in indices] for name in MEASURED_FIELDS}
            try:
                parts.append(self.restore_group(group))
            except InputError as error:
                skipped += [(key, str(error)) for key in group["key"]]
            except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
                if not is_out_of_memory(error):
                    raise
                height, width = group["measurement"][0].shape[-2:]
                reason = f"restoring {len(indices)} measurement(s) of {height}x{width} ran out of memory"
                advice = f"{reason}; restore it alone, smaller, or on a larger device"
                skipped += [(key, advice) for key in group["key"]]
                rank_zero_warn(f"{reason}: skipped, with the reason in skipped.jsonl")
        return Restoration.concatenate(parts, skipped)

    def restore_group(self, group: dict[str, list]) -> Restoration:
        """Measurements of one size (``MEASURED_FIELDS`` of a ``MeasuredBatch``), restored together."""
        y = torch.stack(group["measurement"]).clone()
        problem = self.given(y, group["mask"], group["kernel"], group["noise_std"])
        return self.solve(group["key"], problem, group["reference"])

    def given(self, y: Tensor, masks: list, kernels: list, noise_std: list[float | None]) -> Problem:
        """The problem of measurements ``y`` as given: the task's operator with their own masks or
        kernels, at the image size they restore to, padded to what the networks need (the
        measurement sees only the image's window, see ``cse.operators.measured.Cropped``)."""
        template, k = self.measurement.operator, self.samples_per_image
        size = image_size(template, tuple(y.shape[-2:]))
        padded = self.padded(size)
        if padded[0] * padded[1] > self.max_pixels:
            raise InputError(
                f"a {size[0]}x{size[1]} restoration is larger than max_pixels={self.max_pixels} allows (memory grows "
                "with the pixels); restore a smaller image, or raise --model.init_args.max_pixels"
            )
        operator = with_parameters(template, masks, kernels)
        repeated = with_parameters(template, masks * k, kernels * k)
        if bool((y.abs() <= 1).all()):  # stored clipped, as image files hold y (see Clipped)
            operator, repeated = Clipped(operator), Clipped(repeated)
        crop = lambda x: x  # noqa: E731
        if padded != size:
            if getattr(self.sampler, "linear_only", False):
                name, multiple = type(self.sampler).__name__, self.prior.size_multiple
                raise InputError(
                    f"{name} works in the operator's SVD, which a padded {size[0]}x{size[1]} restoration has not "
                    f"here: give measurements whose restored sides are multiples of {multiple}"
                )
            window = centred_window(size, padded)
            operator, repeated = Cropped(operator, window, padded), Cropped(repeated, window, padded)
            crop = operator.crop
        task_std = getattr(self.measurement.noise, "std", 0.0)
        std = [task_std if s is None else s for s in noise_std]
        shape = (len(y), y.shape[1], *padded)
        return Problem(y, operator, repeated, operator.lift(y), shape, std, crop, size)

    def padded(self, size: tuple[int, int]) -> tuple[int, int]:
        """``size`` padded to what the prior's networks take."""
        multiple = self.prior.size_multiple
        if multiple is None:
            raise InputError(f"{type(self.prior).__name__} takes images of one shape only, not measurements as given")
        return padded_size(size, multiple)

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

    def simulated(self, images: Tensor, keys: list[str]) -> Problem:
        """The problem of measuring clean ``images`` with the task's measurement (each image's own seeds)."""
        y, measurement = self.measure(images, keys)
        repeated = self.measurement.bind_keys(keys * self.samples_per_image, images.shape, str(self.seed))
        std = getattr(self.measurement.noise, "std", 0.0)
        return Problem(y, measurement.operator, repeated.operator, measurement.lift(y), tuple(images.shape), std)

    def restore_batch(self, keys: list[str], images: Tensor) -> Restoration:
        if not keys:
            empty = images.new_empty(0, *images.shape[1:]).cpu()
            return Restoration([], empty, empty, empty, empty, [])
        return self.solve(keys, self.simulated(images, keys), list(images))

    def solve(self, keys: list[str], problem: Problem, references: list[Tensor | None]) -> Restoration:
        """Restore one batch of one size: sample, then measure consistency, quality (where a clean
        reference exists) and cost per image."""
        counted = CountingPrior(self.prior.conditioned(self.repeat(problem.control)))
        device = problem.y.device
        on_gpu = device.type == "cuda"
        if on_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        samples = self.restore(counted, problem, keys)
        if on_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            residual = per_sample_norm(problem.operator(samples[0]) - problem.y)
        relative = residual / per_sample_norm(problem.y).clamp_min(1e-12)
        self.warn_if_inconsistent(residual, relative)
        cost = {
            "seconds": seconds / len(keys),
            "network_evaluations": counted.evaluations / len(keys),
            "network_gradients": counted.gradients / len(keys),
            "decoder_passes": counted.decodes / len(keys),
            "decoder_gradients": counted.decoder_gradients / len(keys),
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None,
            "batch_size": len(keys),
        }
        samples = problem.crop(samples)
        recon = samples[0]
        per_image = {"residual": residual, "residual_relative": relative, "noise_std": problem.noise_std}
        maps = None
        if samples.shape[0] > 1:
            maps = torch.stack([diversity(samples[:, i]) for i in range(len(keys))])
            per_image["diversity"] = maps.flatten(1).mean(1)
        metrics = [
            ImageMetrics(
                key=key, **quality(recon[i], references[i]), **{n: float(v[i]) for n, v in per_image.items()}, **cost
            )  # noqa: E501
            for i, key in enumerate(keys)
        ]
        cpu = lambda t: None if t is None else t.detach().float().cpu()  # noqa: E731
        return Restoration(
            keys,
            [cpu(r) for r in references],
            cpu(problem.y),
            cpu(problem.crop(problem.control)),
            cpu(recon),
            metrics,
            None if maps is None else cpu(maps),
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
