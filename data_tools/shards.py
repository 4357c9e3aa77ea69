"""``python -m data_tools shards``: an image folder -> square images in webdataset shards.

Without ``--seed`` the first N files in sorted order are taken (the paper's evaluation set, the
first 1000 ImageNet validation images); with it, the first N after a seeded shuffle (its 100 /
1000-image CSE training sets). Unreadable and too-small files are reported and skipped, and the
next file takes their place.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image

from cse import runs
from cse.images import IMAGE_SUFFIXES, decode_image, eval_transform, image_problem, read_bytes, walk_folder
from data_tools.writing import safe_key, write_manifest, write_shards


def list_images(src: Path) -> list[tuple[Path, str | None]]:
    """Every entry under ``src`` but hidden ones (recursive, linked folders followed once, sorted),
    with why it cannot be used when that is known from listing (a linked folder that loops); non-images
    and dangling links are caught when read. Either is skipped with the reason."""
    return sorted((p, problem) for p, problem in walk_folder(src, suffixes=()) if not p.name.startswith("."))


def ordered(files: list[tuple[Path, str | None]], seed: int | None) -> list[tuple[Path, str | None]]:
    if seed is None:
        return files
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    return [files[i] for i in order]


def prepare(path: Path, src: Path, size: int) -> tuple[str, Image.Image, dict]:
    """Decode, check the size, resize the short side and centre-crop; raises ValueError to skip."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"not an image suffix ({path.suffix or 'none'})")
    image = decode_image(read_bytes(path))
    if (reason := image_problem(image, size)) is not None:
        raise ValueError(reason)
    relative = path.relative_to(src).as_posix()
    metadata = {"source": relative, "original_size": list(image.size)}
    if "/" in relative:  # ImageNet layout: the class is the first folder
        metadata["class"] = relative.split("/", 1)[0]
    return safe_key(relative), eval_transform(size)(image), metadata


PRODUCTS = ("*.tar", "manifest.json")  # a data module reads every tar of the folder: none may be another job's


def build_shards(
    src: Path,
    out: Path,
    size: int = 512,
    count: int | None = None,
    seed: int | None = None,
    shard_size: int = 1000,
    overwrite: bool = False,
) -> dict:
    """Write the shards and manifest; returns the manifest's summary (counts and skipped files).

    ``out`` holds one job (cse.runs.job): a rerun with the same settings, a larger count or another
    shard size packs it again from the start (no earlier shard stays); other settings are refused
    unless ``overwrite``."""
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src} is not a folder")
    settings = {"src": str(src), "size": size, "count": count, "seed": seed, "shard_size": shard_size}
    grow = {"may_grow": ("count",), "may_change": ("shard_size",)}
    with runs.job(out, settings, PRODUCTS, overwrite, "shards", **grow):
        runs.clear(out, PRODUCTS)  # packed again from the start
        return pack(src, out, size, count, seed, shard_size, settings)


def pack(src: Path, out: Path, size: int, count: int | None, seed: int | None, shard_size: int, settings: dict) -> dict:
    """The first ``count`` usable images of ``src`` (in order, or seeded) into ``out``'s shards."""
    skipped, keys = [], set()

    def samples():
        written = 0
        for path, problem in ordered(list_images(src), seed):
            if count is not None and written >= count:
                return
            try:
                if problem is not None:
                    raise ValueError(problem)
                key, image, metadata = prepare(path, src, size)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                skipped.append({"source": path.relative_to(src).as_posix(), "reason": str(error)})
                print(f"skipped {path}: {error}", file=sys.stderr)
                continue
            if key in keys:
                raise ValueError(f"two files map to the key {key!r}; rename one of them")
            keys.add(key)
            written += 1
            yield key, image, metadata

    rows = write_shards(samples(), out, shard_size)
    write_manifest(out, rows, skipped, settings)
    if count is not None and len(rows) < count:
        print(f"warning: asked for {count} images, {src} had {len(rows)} usable", file=sys.stderr)
    return {"written": len(rows), "skipped": skipped, "shards": sorted({r["shard"] for r in rows})}
