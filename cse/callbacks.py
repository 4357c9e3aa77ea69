"""Writing predictions to disk: PNGs written atomically, so a rerun can skip what is done."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch import Tensor


def to_uint8(image: Tensor) -> np.ndarray:
    """``[C, H, W]`` in [-1, 1] -> ``[H, W, C]`` (or ``[H, W]`` for one channel) uint8."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def save_png_atomic(image: Tensor, path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename: a crash never leaves half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as file:
            Image.fromarray(to_uint8(image)).save(file, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ImageWriter(BasePredictionWriter):
    """Writes ``prediction["images"][folder][i]`` to ``out/folder/{key_i}.png`` per batch.

    ``predict_step`` returns ``{"key": list[str], "images": {folder: [B, C, H, W] in [-1, 1]}}``.
    :meth:`done` tells which keys are complete, so data modules can leave them out of a rerun.
    """

    def __init__(self, out: str | os.PathLike, folders: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.out, self.folders = Path(out), tuple(folders)

    def path(self, folder: str, key: str) -> Path:
        return self.out / folder / f"{key}.png"

    def done(self, key: str) -> bool:
        return all(self.path(folder, key).exists() for folder in self.folders)

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for folder, images in prediction["images"].items():
            for key, image in zip(prediction["key"], images, strict=True):
                save_png_atomic(image, self.path(folder, key))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier("images written")  # every rank's files exist before anyone reads them
