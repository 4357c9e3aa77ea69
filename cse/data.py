"""Images for training and restoration, from plain folders or webdataset shards, as one batch
schema: ``{"key": list[str], "image": [B, 3, H, W] in [-1, 1]}``.

Shards are indexed once (tar headers only) and read by offset, so both sources are map-style:
subsets are exact, Lightning splits them across ranks, DataLoader workers split them further,
and every sample's augmentation is seeded by (seed, epoch, key), so a resumed run sees the
same data as an uninterrupted one.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from cse.seeding import seed_from_key

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")


# -- reading one image ---------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit grey is rescaled (PIL's own convert would clip it),
    alpha is composited on white, palettes are expanded."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def decode_image(data: bytes) -> Image.Image:
    """Fully decoded RGB image; raises ``OSError``/``ValueError`` for corrupt or truncated data."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return to_rgb(image)


def to_tensor(image: Image.Image) -> Tensor:
    """PIL RGB -> ``[3, H, W]`` float in [-1, 1]."""
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return array.float() / 127.5 - 1


# -- where the samples are ------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRef:
    key: str
    file: str
    offset: int = 0  # byte range inside a shard; size -1 reads the whole file
    size: int = -1

    def read(self) -> bytes:
        with open(self.file, "rb") as handle:
            handle.seek(self.offset)
            return handle.read(self.size)


def shard_files(source: str) -> list[str]:
    """Shard paths from a folder of ``.tar`` files, a glob, or a brace pattern ``train-{000..009}.tar``."""
    if os.path.isdir(source):
        return sorted(glob.glob(os.path.join(source, "*.tar")))
    import braceexpand

    return sorted(f for pattern in braceexpand.braceexpand(source) for f in glob.glob(os.path.expanduser(pattern)))


def index_shards(files: list[str]) -> list[SampleRef]:
    """One reference per sample key holding an image member (webdataset layout ``{key}.{ext}``)."""
    refs = []
    for file in files:
        with tarfile.open(file) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if member.isfile() and f".{ext.lower()}" in IMAGE_SUFFIXES:
                    refs.append(SampleRef(key, file, member.offset_data, member.size))
    return refs


def index_folder(root: str) -> list[SampleRef]:
    """Every image under ``root`` (recursive), keyed by its relative path without suffix."""
    root_path = Path(root)
    files = sorted(p for p in root_path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return [SampleRef(str(p.relative_to(root_path).with_suffix("")), str(p)) for p in files]


def index_source(source: str) -> list[SampleRef]:
    """Samples of an image folder or of webdataset shards, sorted by key."""
    files = shard_files(source) if (".tar" in source or os.path.isdir(source)) else []
    refs = index_shards(files) if files else index_folder(source) if os.path.isdir(source) else []
    if not refs:
        raise FileNotFoundError(f"no images or webdataset shards found at {source!r}")
    keys = [r.key for r in refs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate sample keys in {source!r}; keys must be unique")
    return sorted(refs, key=lambda r: r.key)


def select_subset(refs: list[SampleRef], count: int | None, seed: int | None, min_length: int = 1) -> list[SampleRef]:
    """The first ``count`` after a seeded shuffle (``seed``) or in key order (no seed); repeated
    to at least ``min_length`` (e.g. the batch size when training on fewer images)."""
    if seed is not None:
        order = torch.randperm(len(refs), generator=torch.Generator().manual_seed(seed)).tolist()
        refs = [refs[i] for i in order]
    refs = refs[:count] if count is not None else refs
    if refs and len(refs) < min_length:
        refs = refs * -(-min_length // len(refs))
    return refs


# -- the dataset ---------------------------------------------------------------------------------


def eval_transform(size: int) -> v2.Transform:
    """Short side resized to ``size`` (antialiased bicubic), centre crop."""
    return v2.Compose(
        [v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(size)]
    )


def train_transform(size: int) -> v2.Transform:
    """The paper's augmentation: RandomResizedCrop(scale 0.8-2.0), flip, ColorJitter(0.1 x 4)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.8, 2.0), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.ColorJitter(0.1, 0.1, 0.1, 0.1),
        ]
    )


class ImageDataset(Dataset):
    """Map-style images by reference; a sample that fails to decode yields None and is counted."""

    def __init__(self, refs: list[SampleRef], transform: v2.Transform, seed: int = 0) -> None:
        self.refs, self.transform, self.seed = refs, transform, seed
        self.epoch = 0
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict | None:
        ref = self.refs[index]
        try:
            image = decode_image(ref.read())
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            self.skipped += 1
            warnings.warn(
                f"skipping unreadable sample {ref.key!r} in {ref.file} ({error}); {self.skipped} skipped", stacklevel=2
            )
            return None
        with torch.random.fork_rng(devices=[]):  # augmentation seeded per (seed, epoch, key)
            torch.manual_seed(seed_from_key(ref.key, f"augment:{self.seed}:{self.epoch}"))
            image = self.transform(image)
        return {"key": ref.key, "image": to_tensor(image)}


def collate(samples: list[dict | None]) -> dict:
    """Stack the readable samples of a batch (unreadable ones were warned about and dropped)."""
    samples = [s for s in samples if s is not None]
    return {
        "key": [s["key"] for s in samples],
        "image": torch.stack([s["image"] for s in samples]) if samples else torch.empty(0, 3, 0, 0),
    }


class EpochSeededSampler(DistributedSampler):
    """DistributedSampler that also tells the dataset the epoch (for its augmentation seeds)."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.epoch = epoch


class ImageDataModule(LightningDataModule):
    """Training, validation and prediction images from folders or shards.

    Args:
        train, val, predict: an image folder, a folder of ``.tar`` shards, or a shard pattern.
        image_size: side of the square images the model sees.
        batch_size: per device; with ``accumulate_grad_batches`` it makes the effective batch.
        train_count: use the first N training images after a seeded shuffle (``subset_seed``).
        val_count / predict_count: the first N in key order (None: all).
        augment: the paper's augmentation on training images.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        predict: str | None = None,
        image_size: int = 512,
        batch_size: int = 8,
        num_workers: int = 2,
        train_count: int | None = None,
        subset_seed: int = 0,
        val_count: int | None = 4,
        predict_count: int | None = None,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def _loader(self, refs: list[SampleRef], transform: v2.Transform, shuffle: bool) -> DataLoader:
        hp = self.hparams
        dataset = ImageDataset(refs, transform, seed=hp.seed)
        trainer = self.trainer
        sampler = EpochSeededSampler(
            dataset,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            shuffle=shuffle,
            seed=hp.seed,
            drop_last=False,
        )
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            sampler=sampler,
            num_workers=hp.num_workers,
            collate_fn=collate,
            persistent_workers=False,
        )

    def _require(self, name: str) -> str:
        source = getattr(self.hparams, name)
        if source is None:
            raise ValueError(f"no {name} data: set --data.init_args.{name}=PATH (an image folder or shards)")
        return source

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        refs = select_subset(index_source(self._require("train")), hp.train_count, hp.subset_seed, hp.batch_size)
        transform = train_transform(hp.image_size) if hp.augment else eval_transform(hp.image_size)
        return self._loader(refs, transform, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.hparams.val is None:
            return []  # no validation
        refs = select_subset(index_source(self.hparams.val), self.hparams.val_count, None)
        return self._loader(refs, eval_transform(self.hparams.image_size), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        refs = select_subset(index_source(self._require("predict")), self.hparams.predict_count, None)
        return self._loader(refs, eval_transform(self.hparams.image_size), shuffle=False)
