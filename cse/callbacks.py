"""Writing predictions to disk: PNGs written atomically, so a rerun can skip what is done."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch import Tensor

from cse.metrics import ALEXNET_FILE, INCEPTION_FILE, LPIPS, feature_distances, heat_map, weights_file


def to_uint8(image: Tensor) -> np.ndarray:
    """``[C, H, W]`` in [-1, 1] -> ``[H, W, C]`` (or ``[H, W]`` for one channel) uint8."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename: a crash never leaves
    half a file where a finished one is expected."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_png_atomic(image: Tensor, path: Path) -> None:
    """``[C, H, W]`` in [-1, 1] as an 8-bit PNG."""
    write_atomic(path, lambda file: Image.fromarray(to_uint8(image)).save(file, format="PNG"))


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


def grid(rows: list[Tensor]) -> Tensor:
    """Rows of ``[B, C, H, W]`` images in [-1, 1] -> one ``[C, rows*H, B*W]`` image in [0, 1]."""
    size = rows[0].shape[-2:]
    rows = [F.interpolate(r.float().cpu(), size=size, mode="nearest") for r in rows]
    return torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2).add(1).div(2).clamp(0, 1)


def read_png(path: Path) -> Tensor:
    """8-bit PNG -> ``[3, H, W]`` in [-1, 1]."""
    from cse.data import decode_image, to_tensor

    return to_tensor(decode_image(path.read_bytes()))


DIVERSITY_SCALE = 0.25  # heat maps: black = 0, white = a per-pixel std of 0.25 on [0, 1], for all methods alike


class RestorationWriter(ImageWriter):
    """Writes ``source/``, ``measurement/``, ``lifted/``, ``recon/`` PNGs (and ``diversity/`` heat
    maps), one metrics line per image, and at the end ``metrics.jsonl``, ``summary.json`` and
    ``grid.png``.

    Each rank appends to its own ``metrics/rank{r}.jsonl``; once all ranks are done, rank 0 merges
    them with earlier runs' lines, adds LPIPS per image and FID/KID over the set, computed from
    the written PNGs, so a resumed run's summary covers every image.
    """

    FOLDERS = ("source", "measurement", "lifted", "recon")

    def __init__(
        self,
        out: str | os.PathLike,
        lpips: bool = True,
        fid: bool = True,
        feature_network: torch.nn.Module | None = None,
        metric_weights_dir: str | None = None,
        grid_size: int = 8,
    ) -> None:
        super().__init__(out, ["recon"])
        self.lpips, self.fid, self.feature_network = lpips, fid, feature_network
        self.metric_weights_dir, self.grid_size = metric_weights_dir, grid_size

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Fail before hours of sampling, not after: the metric weights must be on disk."""
        if stage != "predict":
            return
        if self.lpips:
            weights_file(ALEXNET_FILE, self.metric_weights_dir, "LPIPS")
        if self.fid and self.feature_network is None:
            weights_file(INCEPTION_FILE, self.metric_weights_dir, "FID/KID")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for folder, images in prediction["images"].items():
            for key, image in zip(prediction["key"], images, strict=True):
                if folder == "diversity":
                    heat = Image.fromarray(heat_map(image, vmax=DIVERSITY_SCALE))
                    write_atomic(self.path(folder, key), lambda file, heat=heat: heat.save(file, format="PNG"))
                elif folder != "recon":
                    save_png_atomic(image, self.path(folder, key))
        for key, image in zip(prediction["key"], prediction["images"].get("recon", []), strict=True):
            save_png_atomic(image, self.path("recon", key))  # last: a recon marks the image done
        if prediction["metrics"]:
            rank_file = self.out / "metrics" / f"rank{trainer.global_rank}.jsonl"
            rank_file.parent.mkdir(parents=True, exist_ok=True)
            with rank_file.open("a") as file:
                file.writelines(json.dumps(row) + "\n" for row in prediction["metrics"])

    def on_predict_end(self, trainer, pl_module) -> None:
        super().on_predict_end(trainer, pl_module)
        if trainer.is_global_zero:
            self.summarise()

    def rows(self) -> dict[str, dict]:
        """Every image's metrics line, from earlier merges and every rank's file (latest wins)."""
        rows = {}
        for file in [self.out / "metrics.jsonl", *sorted((self.out / "metrics").glob("rank*.jsonl"))]:
            if file.exists():
                for line in file.read_text().splitlines():
                    if line.strip():
                        row = json.loads(line)
                        rows[row["key"]] = {**rows.get(row["key"], {}), **row}
        return dict(sorted(rows.items()))

    def load(self, folder: str, keys: list[str]) -> Tensor:
        return torch.stack([read_png(self.path(folder, key)) for key in keys])

    def summarise(self) -> dict:
        rows = {key: row for key, row in self.rows().items() if self.done(key)}
        keys = list(rows)
        if not keys:
            return {}
        if self.lpips:
            metric = LPIPS(self.metric_weights_dir)
            for start in range(0, len(keys), 32):
                chunk = keys[start : start + 32]
                for key, value in zip(
                    chunk, metric(self.load("recon", chunk), self.load("source", chunk)), strict=True
                ):
                    rows[key]["lpips"] = float(value)
        summary = {"count": len(keys)}
        numeric = {n for row in rows.values() for n, v in row.items() if isinstance(v, int | float)}
        for name in sorted(numeric - {"batch_size"}):  # means of per-image metrics and costs
            values = [row[name] for row in rows.values() if isinstance(row.get(name), int | float)]
            summary[name] = float(np.mean(values))
        if self.fid and len(keys) >= 2:
            batches = [keys[start : start + 64] for start in range(0, len(keys), 64)]
            real = (self.load("source", batch) for batch in batches)
            fake = (self.load("recon", batch) for batch in batches)
            summary |= feature_distances(real, fake, self.feature_network, self.metric_weights_dir)
        lines = "".join(json.dumps(row) + "\n" for row in rows.values())
        write_atomic(self.out / "metrics.jsonl", lambda file: file.write(lines.encode()))
        for file in (self.out / "metrics").glob("rank*.jsonl"):
            file.unlink()
        write_atomic(self.out / "summary.json", lambda file: file.write(json.dumps(summary, indent=2).encode()))
        self.write_grid(keys[: self.grid_size])
        return summary

    def write_grid(self, keys: list[str]) -> None:
        """Rows: source, lifted measurement, recon; one column per image."""
        rows = [self.load(folder, keys) for folder in ("source", "lifted", "recon")]
        image = (grid(rows) * 2 - 1).clamp(-1, 1)
        save_png_atomic(image, self.out / "grid.png")
