"""``python -m data_tools digits``: scikit-learn's bundled handwritten digits (1,797 images, 8x8,
values 0-16) as 16x16 RGB images in shards, with a fixed seeded train/test split and the label
of each digit in its JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cse.operators.resize import imresize
from data_tools.writing import write_manifest, write_shards

TEST_COUNT = 200
SPLIT_SEED = 0


def digit_images(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as ``[N, size, size]`` uint8 (MATLAB-style bicubic from 8x8), labels ``[N]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    upsampled = imresize(torch.from_numpy(digits.images / 16.0), size, size).clamp(0, 1)
    return (upsampled * 255).round().to(torch.uint8).numpy(), digits.target


def split(n: int) -> tuple[list[int], list[int]]:
    """The fixed seeded split: ``TEST_COUNT`` test indices, the rest train, each sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    return sorted(order[TEST_COUNT:]), sorted(order[:TEST_COUNT])


def build_digits(out: Path, size: int = 16, shard_size: int = 1000) -> dict:
    images, labels = digit_images(size)
    summary = {}
    for name, indices in zip(("train", "test"), split(len(images)), strict=True):
        samples = (
            (f"digit{i:04d}", Image.fromarray(images[i]).convert("RGB"), {"label": int(labels[i]), "index": i})
            for i in indices
        )
        rows = write_shards(samples, out / name, shard_size)
        write_manifest(
            out / name, rows, [], {"source": "sklearn.datasets.load_digits", "size": size, "split_seed": SPLIT_SEED}
        )
        summary[name] = len(rows)
    return summary
