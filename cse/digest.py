"""Short content digests, so that a run's record says which weights and tensors made it (a file
retrained in place, or another matrix of the same shape, gives another digest), and what changed
between two runs' settings."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection
from pathlib import Path

from torch import Tensor

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
EDGE = 1 << 20  # bytes read from each end of a weight file


def tensor_digest(*tensors: Tensor) -> str:
    """sha256 of the tensors' float64 values (16 hex digits)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().double().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a weight file's size, first and last MiB: instant on multi-GB files, and changed by
    any retraining (every tensor's bytes move), unlike a modification time a checkout resets."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as file:
        digest.update(file.read(EDGE))
        if size > EDGE:
            file.seek(max(EDGE, size - EDGE))
            digest.update(file.read())
    return digest.hexdigest()[:16]


def folder_digest(folder: str | os.PathLike, ignore: Collection[str] = ()) -> str:
    """The digest of every weight file and config under a model folder (names included), but for
    the files named in ``ignore`` (records about the model that do not change what it computes)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in ignore):
        if path.suffix in WEIGHT_SUFFIXES:
            digest.update(f"{path.relative_to(folder)}:{file_digest(path)}".encode())
        elif path.suffix == ".json":
            digest.update(f"{path.relative_to(folder)}:".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(settings: dict) -> str:
    """sha256 of a settings tree as sorted JSON (16 hex digits)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(tree: object, prefix: str = "") -> dict:
    """``{"a.b": leaf}`` for a nested dict (lists are leaves)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def differences(old: dict, new: dict, ignore: Collection[str] = (), shown: int = 8) -> str:
    """``"a.b: 1 -> 2; c: x -> None"`` for the leaves of two settings trees that differ (keys in
    ``ignore`` left out; the first ``shown``, then a count); empty when they agree."""
    old, new = flatten(old), flatten(new)
    as_json = lambda value: json.dumps(value, sort_keys=True, default=str)  # noqa: E731
    changed = [k for k in sorted({*old, *new} - set(ignore)) if as_json(old.get(k)) != as_json(new.get(k))]
    listed = "; ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in changed[:shown])
    return listed + (f"; and {len(changed) - shown} more" if len(changed) > shown else "")
