"""``python -m data_tools digits``: scikit-learn's bundled handwritten digits (1,797 images,
8x8, values 0-16) as 16x16 RGB images in shards, with a fixed seeded train/test split."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cse.digits import SPLIT_SEED, digit_images, split
from data_tools.writing import write_manifest, write_shards


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
