"""Make ``import torchvision`` work on a CPU-only torch.

PyPI's torchvision wheel is a CUDA build whose ``_C`` extension cannot load against the CPU
torch wheel; torchvision then fails at import with "operator torchvision::nms does not exist",
which also breaks lightning, torchmetrics and lpips. Declaring the two op schemas that its
Python side looks up lets the pure-Python parts import. Where the extension loads, this does
nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library: torch.library.Library | None = None  # kept alive: the schemas live as long as it does


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # no torchvision: nothing to fix
    extension = next(iter(sorted(Path(spec.origin).parent.glob("_C.*"))), None)
    if extension is None:
        return False
    try:
        torch.ops.load_library(str(extension))
    except OSError:
        return False
    return True


def ensure_torchvision_importable() -> None:
    global _library
    if _library is not None or "torchvision" in sys.modules or _extension_loads():
        return
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
