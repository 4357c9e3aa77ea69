"""Images for training and restoration, from plain folders or webdataset shards, as one batch
schema (:class:`Batch`).

Shards are indexed once (tar headers only) and read by offset, so both sources are map-style:
subsets are exact, each rank reads its own part, and every sample's augmentation is seeded by
(seed, epoch, sample id), so a resumed run sees the same data as an uninterrupted one.

Training follows the CSE recipe (diffusers' ``train_controlnet.py`` as the paper's code uses it):
every optimizer step sees exactly ``batch_size x accumulate_grad_batches x world_size`` samples.
An epoch is a seeded shuffle of the training set cut to a multiple of that effective batch; a set
smaller than one effective batch is repeated up to it, and each repetition is a sample of its
own (``sample_id`` ``key#r``), with its own augmentation, timestep and noise.
"""

from __future__ import annotations

import glob
import json
import math
import os
import tarfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from cse.errors import InputError
from cse.images import (
    IMAGE_SUFFIXES,
    decode_image,
    eval_transform,
    image_problem,
    read_bytes,
    read_range,
    to_tensor,
    walk_folder,
)
from cse.records import Batch
from cse.seeding import seed_from_key

# -- where the samples are ------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRef:
    key: str
    file: str
    offset: int = 0  # byte range inside a shard; size -1 reads the whole file
    size: int = -1
    meta: tuple[str, int, int] | None = None  # (file, offset, size) of the sample's JSON, if any
    problem: str | None = None  # why it cannot be read, found while listing (a symlink loop, ...)
    extras: tuple[tuple[str, str, int, int], ...] = ()  # (member name, file, offset, size) of its other files

    def read(self) -> bytes:
        if self.problem is not None:
            raise OSError(self.problem)
        return read_bytes(Path(self.file), self.offset, self.size)

    def metadata(self) -> dict:
        return json.loads(read_range(*self.meta)) if self.meta is not None else {}


def shard_files(source: str) -> list[str]:
    """Shard paths from a folder of ``.tar`` files, a glob, or a brace pattern ``train-{000..009}.tar``."""
    if os.path.isdir(source):
        return sorted(glob.glob(os.path.join(source, "*.tar")))
    import braceexpand

    return sorted(f for pattern in braceexpand.braceexpand(source) for f in glob.glob(os.path.expanduser(pattern)))


def index_shards(files: list[str]) -> list[SampleRef]:
    """One reference per sample key holding an image member (webdataset layout ``{key}.{ext}``),
    with its ``{key}.json`` member when there is one."""
    images, metas, extras = {}, {}, {}
    for file in files:
        with tarfile.open(file) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if not member.isfile():
                    continue
                if f".{ext.lower()}" in IMAGE_SUFFIXES:
                    images[key] = (file, member.offset_data, member.size)
                elif ext.lower() == "json":
                    metas[key] = (file, member.offset_data, member.size)
                else:  # e.g. a measurement's mask.png or kernel.npy
                    extras.setdefault(key, []).append((ext.lower(), file, member.offset_data, member.size))
    return [
        SampleRef(key, *where, meta=metas.get(key), extras=tuple(extras.get(key, ()))) for key, where in images.items()
    ]


def index_folder(root: str) -> list[SampleRef]:
    """Every image under ``root`` (recursive, linked folders followed), keyed by its relative path
    without suffix; a ``{stem}.json`` beside an image is its metadata. Entries that cannot be images
    (dangling links, loops, folders named ``x.png``) are listed too, to be skipped with the reason."""
    root_path = Path(root)
    refs = []
    for path, problem in sorted(walk_folder(root_path)):
        sidecar = path.with_suffix(".json")
        meta = (str(sidecar), 0, -1) if sidecar.is_file() else None
        key = str(path.relative_to(root_path).with_suffix(""))
        refs.append(SampleRef(key, str(path), meta=meta, problem=problem))
    return refs


def duplicate_keys(refs: list[SampleRef]) -> dict[str, list[str]]:
    """Keys held by more than one file (``a.png`` and ``a.jpg``), with their files."""
    files: dict[str, list[str]] = {}
    for ref in refs:
        files.setdefault(ref.key, []).append(ref.file)
    return {key: found for key, found in files.items() if len(found) > 1}


def index_source(source: str) -> list[SampleRef]:
    """Samples of an image folder or of webdataset shards, sorted by key."""
    files = shard_files(source) if (".tar" in source or os.path.isdir(source)) else []
    refs = index_shards(files) if files else index_folder(source) if os.path.isdir(source) else []
    if not refs:
        where = Path(source).expanduser().resolve()
        hint = " (python -m data_tools digits --out data/digits makes the digits)" if "digits" in source else ""
        raise FileNotFoundError(f"no images or webdataset shards found at {source!r} ({where}){hint}")
    if duplicates := duplicate_keys(refs):
        key, files = next(iter(duplicates.items()))
        more = f" (and {len(duplicates) - 1} more keys)" if len(duplicates) > 1 else ""
        raise InputError(
            f"{' and '.join(files)} would both be sample {key!r}{more}: a key names one image; rename or move one"
        )
    return sorted(refs, key=lambda r: r.key)


def select_subset(refs: list[SampleRef], count: int | None, seed: int | None) -> list[SampleRef]:
    """The first ``count`` after a seeded shuffle (``seed``) or in key order (no seed)."""
    if seed is not None:
        order = torch.randperm(len(refs), generator=torch.Generator().manual_seed(seed)).tolist()
        refs = [refs[i] for i in order]
    return refs[:count] if count is not None else refs


# -- the dataset ---------------------------------------------------------------------------------


def train_transform(size: int) -> v2.Transform:
    """The paper's augmentation: RandomResizedCrop(scale 0.8-2.0), flip, ColorJitter(0.1 x 4)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.8, 2.0), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.ColorJitter(0.1, 0.1, 0.1, 0.1),
        ]
    )


Item = tuple[int, int]  # (index into the references, repetition)


def sample_id(key: str, repetition: int) -> str:
    return key if repetition == 0 else f"{key}#{repetition}"


class ImageDataset(Dataset):
    """Map-style images by reference, indexed by ``(index, repetition)``.

    A sample that cannot be read (corrupt, truncated, not an image), or that is smaller than
    ``min_size`` on a side or longer than ``max_aspect`` times its width (or height), yields only
    its key and the reason (collated into ``Batch["skipped"]``): it is never silently upscaled.
    """

    def __init__(
        self,
        refs: list[SampleRef],
        transform: v2.Transform,
        seed: int = 0,
        min_size: int = 1,
        max_aspect: float = 4.0,
        label_key: str | None = None,
    ) -> None:
        self.refs, self.transform, self.seed = refs, transform, seed
        self.min_size, self.max_aspect, self.label_key = min_size, max_aspect, label_key
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.refs)

    @staticmethod
    def skip(ref: SampleRef, reason: str) -> dict:
        warnings.warn(f"skipping sample {ref.key!r} in {ref.file}: {reason}", stacklevel=3)
        return {"key": ref.key, "skipped": reason}

    def __getitem__(self, item: Item | int) -> dict:
        index, repetition = item if isinstance(item, tuple) else (item, 0)
        ref = self.refs[index]
        try:
            image = decode_image(ref.read())
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            return self.skip(ref, f"unreadable ({error})")
        if (reason := image_problem(image, self.min_size, self.max_aspect)) is not None:
            return self.skip(ref, reason)
        identity = sample_id(ref.key, repetition)
        with torch.random.fork_rng(devices=[]):  # augmentation seeded per (seed, epoch, sample id)
            torch.manual_seed(seed_from_key(identity, f"augment:{self.seed}:{self.epoch}"))
            image = self.transform(image)
        label = ref.metadata().get(self.label_key, -1) if self.label_key else -1
        return {"key": ref.key, "sample_id": identity, "image": to_tensor(image), "label": int(label)}


def collate(samples: list[dict]) -> Batch:
    """Stack the usable samples of a batch; list the others with their reasons."""
    usable = [s for s in samples if "skipped" not in s]
    return {
        "key": [s["key"] for s in usable],
        "sample_id": [s["sample_id"] for s in usable],
        "image": torch.stack([s["image"] for s in usable]) if usable else torch.empty(0, 3, 0, 0),
        "label": torch.tensor([s["label"] for s in usable], dtype=torch.long),
        "skipped": [(s["key"], s["skipped"]) for s in samples if "skipped" in s],
    }


# -- which samples each rank sees, and when -------------------------------------------------------


class EpochPlan(DistributedSampler):
    """This rank's ``(index, repetition)`` items for the current epoch.

    Training (``shuffle``): a seeded permutation of the set, repeated up to ``multiple`` items when
    smaller, cut to a multiple of ``multiple`` (the effective batch over all ranks), then dealt
    round-robin to the ranks. Evaluation: key order, dealt round-robin, nothing dropped (ranks may
    differ by one item). ``resume(epoch, batches)`` skips the batches this rank already consumed.
    It is a ``DistributedSampler``, so Lightning leaves it in place under DDP.
    """

    def __init__(
        self, dataset: ImageDataset, num_replicas: int, rank: int, shuffle: bool, seed: int, multiple: int = 1
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.multiple, self.skip_items = multiple, 0

    def items(self) -> list[Item]:
        n = len(self.dataset)
        if not self.shuffle:
            return [(i, 0) for i in range(self.rank, n, self.num_replicas)]
        copies = max(1, math.ceil(self.multiple / n))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n * copies, generator=generator).tolist()
        usable = len(order) // self.multiple * self.multiple
        return [(i % n, i // n) for i in order[:usable]][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[Item]:
        items = self.items()[self.skip_items :]
        self.skip_items = 0
        return iter(items)

    def __len__(self) -> int:
        return len(self.items())

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.epoch = epoch

    def resume(self, epoch: int, items: int) -> None:
        self.set_epoch(epoch)
        self.skip_items = items


class ResumableLoader(DataLoader):
    """A training loader whose position in the epoch is saved in Lightning checkpoints.

    ``consumed()`` tells how many batches of the current epoch the loop has processed (Lightning's
    own count: the loader itself runs ahead by its prefetch), so a run resumed mid-epoch continues
    with exactly the batches an uninterrupted run would see next.
    """

    consumed: Callable[[], int] = staticmethod(lambda: 0)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.sampler.epoch, "batches": int(self.consumed())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)


class ImageDataModule(LightningDataModule):
    """Training, validation and prediction images from folders or shards.

    Args:
        train, val, predict: an image folder, a folder of ``.tar`` shards, or a shard pattern.
        image_size: side of the square images the model sees.
        batch_size: per device; with ``accumulate_grad_batches`` and the device count it makes the
            effective batch, which every optimizer step sees in full.
        train_count: use the first N training images after a seeded shuffle (``subset_seed``).
        val_count / predict_count: the first N in key order (None: all).
        augment: the paper's augmentation on training images.
        min_size: images with a side below this are skipped with the reason (default: ``image_size``,
            so nothing is upscaled); max_aspect: so are images longer than this ratio.
        label_key: read this field of each sample's JSON as an integer ``label``.
        seed: augmentation seeds derive from it, the epoch and each sample id.
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
        min_size: int | None = None,
        max_aspect: float = 4.0,
        label_key: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # a run that would restore or train on nothing is refused here, not after an empty loop
        at_least_one = (("batch_size", batch_size), ("image_size", image_size))
        at_least_one += (("train_count", train_count), ("predict_count", predict_count))
        for name, value in at_least_one:
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (None: all), got {value}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.exclude: set[str] = set()  # keys already done (set by a resumable prediction writer)

    def _dataset(self, refs: list[SampleRef], transform: v2.Transform) -> ImageDataset:
        hp = self.hparams
        min_size = hp.min_size if hp.min_size is not None else hp.image_size
        return ImageDataset(refs, transform, hp.seed, min_size, hp.max_aspect, hp.label_key)

    def _loader(self, dataset: ImageDataset, training: bool) -> DataLoader:
        hp, trainer = self.hparams, self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        accumulate = trainer.accumulate_grad_batches if trainer else 1
        plan = EpochPlan(
            dataset, world, rank, shuffle=training, seed=hp.seed, multiple=hp.batch_size * accumulate * world
        )
        loader_class = ResumableLoader if training else DataLoader
        loader = loader_class(
            dataset, batch_size=hp.batch_size, sampler=plan, num_workers=hp.num_workers, collate_fn=collate
        )
        if training and trainer is not None:
            loader.consumed = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return loader

    def _require(self, name: str) -> str:
        source = getattr(self.hparams, name)
        if source is None:
            raise ValueError(f"no {name} data: set --data.init_args.{name}=PATH (an image folder or shards)")
        return source

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        refs = select_subset(index_source(self._require("train")), hp.train_count, hp.subset_seed)
        transform = train_transform(hp.image_size) if hp.augment else eval_transform(hp.image_size)
        return self._loader(self._dataset(refs, transform), training=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.hparams.val is None:
            return []  # no validation
        refs = select_subset(index_source(self.hparams.val), self.hparams.val_count, None)
        return self._loader(self._dataset(refs, eval_transform(self.hparams.image_size)), training=False)

    def predict_dataloader(self) -> DataLoader:
        """The prediction set in key order, without the keys in :attr:`exclude` (done earlier)."""
        refs = select_subset(index_source(self._require("predict")), self.hparams.predict_count, None)
        remaining = [ref for ref in refs if ref.key not in self.exclude]
        if refs and not remaining:
            rank_zero_info(
                f"All {len(refs)} inputs already have results in this run's folder: nothing to restore "
                "(the writer's overwrite=true, or another folder, redoes them)."
            )
        refs = remaining
        return self._loader(self._dataset(refs, eval_transform(self.hparams.image_size)), training=False)


class PointsDataModule(LightningDataModule):
    """Given points (rows of ``points``, e.g. a Gaussian-mixture prior's samples), for predict-time
    modules of the exact tier: keys ``point0000``..., the point as ``image``."""

    def __init__(self, points: list[list[float]], batch_size: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.exclude: set[str] = set()

    def predict_dataloader(self) -> DataLoader:
        points = torch.tensor(self.hparams.points, dtype=torch.float64)
        items = [
            {"key": f"point{i:04d}", "sample_id": f"point{i:04d}", "image": p, "label": -1}
            for i, p in enumerate(points)
            if f"point{i:04d}" not in self.exclude
        ]
        return DataLoader(items, batch_size=self.hparams.batch_size, collate_fn=collate)
