"""Writing webdataset shards (``{key}.png`` + ``{key}.json``) and their manifest."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from pathlib import Path

import webdataset as wds
from PIL import Image

SHARD_PATTERN = "shard-%06d.tar"


def safe_key(relative_path: str) -> str:
    """A webdataset key from a relative path: no dots (webdataset splits the suffix at the
    first one) and no slashes; ``n01440764/ILSVRC2012_val_00000001.JPEG`` -> ``n01440764__ILSVRC2012_val_00000001``."""
    stem = relative_path.rsplit(".", 1)[0] if "." in Path(relative_path).name else relative_path
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem.replace("/", "__"))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(samples: Iterable[tuple[str, Image.Image, dict]], out: Path, shard_size: int) -> list[dict]:
    """Write ``(key, image, metadata)`` samples into ``out/shard-NNNNNN.tar``; returns manifest rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with wds.ShardWriter(str(out / SHARD_PATTERN), maxcount=shard_size, verbose=0) as sink:
        for key, image, metadata in samples:
            sink.write({"__key__": key, "png": png_bytes(image), "json": json.dumps(metadata).encode()})
            rows.append({"key": key, "shard": Path(sink.fname).name, **metadata})
    return rows


def write_manifest(out: Path, rows: list[dict], skipped: list[dict], settings: dict) -> Path:
    """``manifest.json``: settings, one row per written sample, and every skipped file with why."""
    manifest = {"settings": settings, "count": len(rows), "samples": rows, "skipped": skipped}
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path
