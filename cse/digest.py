"""Short content digests, so that a run's record says which weights and tensors made it (a file
retrained in place, or another matrix of the same shape, gives another digest)."""

from __future__ import annotations

import hashlib
import os
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


def folder_digest(folder: str | os.PathLike) -> str:
    """The digest of every weight file and config under a model folder (names included)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix in WEIGHT_SUFFIXES:
            digest.update(f"{path.relative_to(folder)}:{file_digest(path)}".encode())
        elif path.suffix == ".json":
            digest.update(f"{path.relative_to(folder)}:".encode() + path.read_bytes())
    return digest.hexdigest()[:16]
