"""Measurements a user already has, as data: ``python -m cse predict`` restores them as they are.

The images of a folder (or of webdataset shards) are the measurements ``y`` themselves: a
low-resolution image, a blurred one, one with a hole. They are read as every image is (grey,
RGBA and 16-bit converted to RGB, unusable files skipped with the reason) and kept at their own
size, on [-1, 1]. What a measurement comes with sits beside it:

- a mask, for inpainting: ``<name>.mask.png`` (in shards the member ``<key>.mask.png``), white
  where pixels are to be filled in (diffusers' convention); or one ``mask`` file for all; else the
  task's box;
- a blur kernel: ``<name>.kernel.npy`` or ``<name>.kernel.png`` (member ``<key>.kernel.npy``); or
  one ``kernel`` file for all; else the task's kernel;
- a clean reference, in a ``reference`` folder of the same names: then PSNR, SSIM (and LPIPS,
  FID where the writer computes them) are measured as on simulated runs; without one, only the
  measurement's residual is.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, TypedDict

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cse.data import EpochPlan, SampleRef, index_source, select_subset
from cse.errors import InputError
from cse.images import IMAGE_SUFFIXES, decode_image, image_problem, read_bytes, to_tensor
from cse.operators.measured import read_kernel, read_mask
from cse.operators.noise_estimate import immerkaer_sigma

SIDECARS = ("mask", "kernel")
"""What a measurement may come with, named ``<name>.<sidecar>.<suffix>`` beside it."""
KERNEL_SUFFIXES = (".npy", *IMAGE_SUFFIXES)


class MeasuredBatch(TypedDict):
    """What :class:`MeasurementDataModule` yields: measurements of any sizes, not stacked."""

    key: list[str]
    measurement: list[Tensor]  # [C, h, w] on [-1, 1], each at its own size
    mask: list[Tensor | None]  # [1, h, w], 1 where observed (inpainting)
    kernel: list[Tensor | None]  # [k_h, k_w], sum 1 (blur)
    reference: list[Tensor | None]  # [C, H, W] the clean image, when a reference folder has it
    noise_std: list[float | None]  # given, or estimated from the measurement; None: the task's
    skipped: list[tuple[str, str]]


def is_sidecar(ref: SampleRef) -> bool:
    """A mask or kernel image listed among the measurements (``a.mask.png``), not a measurement."""
    stem = Path(ref.key).name
    return stem in SIDECARS or stem.rpartition(".")[2] in SIDECARS


def sidecar_files(ref: SampleRef) -> dict[str, tuple[str, str, int, int]]:
    """``{"mask": (name, file, offset, size), ...}``: the files that came with a measurement."""
    found = {}
    for member, file, offset, size in ref.extras:  # shard members <key>.mask.png, <key>.kernel.npy
        kind = member.partition(".")[0]
        if kind in SIDECARS:
            found[kind] = (f"{ref.file}:{ref.key}.{member}", file, offset, size)
    if ref.extras or ref.offset:
        return found
    path = Path(ref.file)
    for kind in SIDECARS:
        for suffix in KERNEL_SUFFIXES if kind == "kernel" else IMAGE_SUFFIXES:
            candidate = path.with_name(f"{path.stem}.{kind}{suffix}")
            if candidate.is_file():
                found[kind] = (str(candidate), str(candidate), 0, -1)
                break
    return found


def folder_file(source: str, kind: str) -> Path | None:
    """``<source>/mask.png`` or ``<source>/kernel.npy`` (one for the whole folder), if there is one."""
    root = Path(source)
    suffixes = KERNEL_SUFFIXES if kind == "kernel" else IMAGE_SUFFIXES
    return next((root / f"{kind}{s}" for s in suffixes if (root / f"{kind}{s}").is_file()), None)


class MeasurementDataset(Dataset):
    """Measurements by reference, each with its mask, kernel and clean reference (if any).

    A measurement that cannot be used (unreadable, a mask of another size, a kernel file that is
    not a kernel, a reference of another size) yields only its key and the reason.
    """

    def __init__(
        self,
        refs: list[SampleRef],
        references: dict[str, SampleRef],
        defaults: dict[str, tuple[str, bytes]],
        noise_std: float | str | None = None,
        max_aspect: float = 8.0,
    ) -> None:
        self.refs, self.references, self.defaults = refs, references, defaults
        self.noise_std, self.max_aspect = noise_std, max_aspect

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, item: tuple[int, int] | int) -> dict:
        ref = self.refs[item[0] if isinstance(item, tuple) else item]
        try:
            return {"key": ref.key, **self.read(ref)}
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            reason = str(error) if isinstance(error, InputError) else f"unreadable ({error})"
            warnings.warn(f"skipping measurement {ref.key!r} in {ref.file}: {reason}", stacklevel=2)
            return {"key": ref.key, "skipped": reason}

    def read(self, ref: SampleRef) -> dict:
        image = decode_image(ref.read())
        if (reason := image_problem(image, 1, self.max_aspect)) is not None:
            raise InputError(reason)
        y = to_tensor(image)
        found = dict(self.defaults)
        for kind, (name, file, offset, size) in sidecar_files(ref).items():
            found[kind] = (name, read_bytes(Path(file), offset, size))
        mask = read_mask(found["mask"][1], found["mask"][0], tuple(y.shape[-2:])) if "mask" in found else None
        kernel = read_kernel(found["kernel"][1], found["kernel"][0]) if "kernel" in found else None
        reference = self.references.get(ref.key)
        clean = to_tensor(decode_image(reference.read())) if reference is not None else None
        std = estimate_noise(y) if self.noise_std == "auto" else self.noise_std
        return {"measurement": y, "mask": mask, "kernel": kernel, "reference": clean, "noise_std": std}


MEASURED_FIELDS = ("key", "measurement", "mask", "kernel", "reference", "noise_std")
"""The per-sample fields of a :class:`MeasuredBatch` (besides ``skipped``)."""
AUTO_NOISE_MIN_SIDE = 8


def estimate_noise(y: Tensor) -> float:
    """The noise std of one measurement ``[C, h, w]`` by Immerkær's estimator (``noise_std: auto``);
    too small a measurement is refused (the estimator reads its structure as noise)."""
    if min(y.shape[-2:]) < AUTO_NOISE_MIN_SIDE:
        raise InputError(
            f"a {y.shape[-2]}x{y.shape[-1]} measurement is too small to estimate its noise (noise_std=auto needs "
            f"{AUTO_NOISE_MIN_SIDE} px a side): give --data.init_args.noise_std"
        )
    return float(immerkaer_sigma(y[None])[0])


def collate_measurements(samples: list[dict]) -> MeasuredBatch:
    usable = [s for s in samples if "skipped" not in s]
    batch = {name: [s[name] for s in usable] for name in MEASURED_FIELDS}
    return {**batch, "skipped": [(s["key"], s["skipped"]) for s in samples if "skipped" in s]}


class MeasurementDataModule(LightningDataModule):
    """Measurements to restore as they are (see the module's docstring for the layout).

    Args:
        predict: a folder of measurement images (masks and kernels beside them), or shards.
        reference: a folder (or shards) of the clean images under the same names, if there are
            any: quality is then measured against them.
        mask: one mask image for every measurement without its own (white = fill in).
        kernel: one blur kernel (``.npy`` or an image) for every measurement without its own.
        noise_std: the measurement noise's std on the [-1, 1] scale (``std_[0,1] x 2``); ``"auto"``
            estimates it from each measurement (Immerkær's estimator, ``cse.operators.noise_estimate``);
            None: the task's noise model's.
        batch_size: measurements per batch (those of one size are restored together).
        predict_count: the first N measurements in name order (None: all).
        max_aspect: measurements longer than this ratio are skipped with the reason.
    """

    def __init__(
        self,
        predict: str,
        reference: str | None = None,
        mask: str | None = None,
        kernel: str | None = None,
        noise_std: float | Literal["auto"] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        predict_count: int | None = None,
        max_aspect: float = 8.0,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("predict_count", predict_count)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (None: all), got {value}")
        if noise_std is not None and noise_std != "auto" and not (0 <= noise_std < float("inf")):
            raise ValueError(f"noise_std must be a number >= 0, 'auto' or None, got {noise_std!r}")
        self.save_hyperparameters()
        self.exclude: set[str] = set()  # keys already done (set by a resumable prediction writer)

    def defaults(self) -> dict[str, tuple[str, bytes]]:
        """The mask and kernel files for every measurement without its own: given, else the folder's."""
        hp, found = self.hparams, {}
        for kind in SIDECARS:
            path = getattr(hp, kind) or folder_file(hp.predict, kind)
            if path is None:
                continue
            if not Path(path).is_file():
                raise InputError(f"no {kind} file at {path} (--data.init_args.{kind})")
            found[kind] = (str(path), Path(path).read_bytes())
        if "kernel" in found:
            read_kernel(found["kernel"][1], found["kernel"][0])  # a bad kernel for all: refused now, in one line
        return found

    def predict_dataloader(self) -> DataLoader:
        hp = self.hparams
        refs = [ref for ref in index_source(hp.predict) if not is_sidecar(ref)]
        if not refs:
            raise InputError(f"no measurements at {hp.predict}: only masks or kernels")
        refs = select_subset(refs, hp.predict_count, None)
        remaining = [ref for ref in refs if ref.key not in self.exclude]
        if refs and not remaining:
            rank_zero_info(f"All {len(refs)} measurements already have results in this folder: nothing to restore.")
        references = {r.key: r for r in index_source(hp.reference)} if hp.reference else {}
        dataset = MeasurementDataset(remaining, references, self.defaults(), hp.noise_std, hp.max_aspect)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        plan = EpochPlan(dataset, world, rank, shuffle=False, seed=0)  # each rank its share, in name order
        return DataLoader(
            dataset, batch_size=hp.batch_size, sampler=plan, num_workers=hp.num_workers, collate_fn=collate_measurements
        )
