"""Prediction writers: every file written atomically, and a rerun completes exactly what is missing.

:class:`RestorationWriter` turns the :class:`~cse.records.Restoration` records of
``RestorationModule.predict_step`` into a results folder::

    source/ measurement/ control/ recon/ diversity/   PNGs, keyed like the input (folders kept)
    metrics.jsonl   one line per restored image      summary.json   means, FID/KID, skipped inputs
    grid.png        labelled rows for a quick look    run.json       the settings that made them

An image is done when its metrics line is written, which happens after its PNGs; a rerun into the
same folder restores only the images that are not done. Whether the folder is this run's (same
settings, more inputs, a stale record, another run's results, a run in progress) is cse.runs'
answer, the same for every command.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from cse import runs
from cse.errors import InputError, ResultsFlagged
from cse.images import heat_map, labelled_grid, read_png, remove_temporaries, save_png, write_atomic, write_text_atomic
from cse.metrics import ALEXNET_FILE, INCEPTION_FILE, LPIPS, feature_distances, weights_file
from cse.records import RESIDUAL_WARNING, Restoration, Samples

GROWING_COUNTS = ("data.predict_count",)  # a larger count extends the run: the first N inputs in key order
DIVERSITY_SCALE = 0.5  # heat maps: black = 0, white = a per-pixel std of 0.5 on [-1, 1], for all methods alike
KID_NOTE = (
    "KID is an unbiased estimate of a squared distance: values at or below 0 (within kid_std) mean no "
    "difference was detected between the two sets at this size."
)


# -- JSON lines that survive interruptions --------------------------------------------------------


def repair_jsonl(path: Path) -> None:
    """Cut a torn last line (a write interrupted mid-line) so that appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):  # replaced atomically: another rank may be reading it
        write_atomic(path, lambda file: file.write(data[: data.rfind(b"\n") + 1]))


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a torn last line is ignored (it is redone), any other
    unreadable line is an error that names the file and the line."""
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):  # the last line, without its newline: a write was cut short
                continue
            raise ValueError(f"{path}, line {number}, is not valid JSON ({error}); fix or delete that line") from error
    return rows


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append rows in one write, flushed to disk before returning."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


class BatchWriter(BasePredictionWriter):
    """Writes each batch as it comes; on SIGTERM (``kill``, ``timeout``, a scheduler's pre-emption)
    stops once the current batch is written, which Lightning's predict loop would not do alone,
    so that a rerun resumes where it stopped."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args, **kwargs) -> None:
        super().on_predict_batch_end(trainer, pl_module, *args, **kwargs)
        if trainer.received_sigterm:
            rank_zero_info("SIGTERM: stopped after writing this batch; a rerun resumes from here")
            raise SIGTERMException(128 + signal.SIGTERM)  # the exit status of a process SIGTERM ended


class ImageWriter(BatchWriter):
    """Writes :class:`~cse.records.Samples` to ``out/folder/{key}.png``; :meth:`done` tells which keys
    are written, so that a rerun leaves them out."""

    def __init__(self, out: str | os.PathLike, folder: str = "images") -> None:
        super().__init__()
        self.out, self.folder = Path(out), folder

    def path(self, key: str) -> Path:
        return self.out / self.folder / f"{key}.png"

    def done(self, key: str) -> bool:
        return self.path(key).exists()

    def write_on_batch_end(
        self, trainer, pl_module, prediction: Samples, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        for key, image in zip(prediction.keys, prediction.images, strict=True):
            save_png(image, self.path(key))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier("images written")  # every rank's files exist before anyone reads them


class ResultsWriter(BatchWriter):
    """What every resumable results folder shares: records per key in JSON lines (each rank its own
    file under ``metrics/``, merged at the end into ``<records>.jsonl``), a ``run.json`` of the
    settings that made them, a rerun that does only what is missing and refuses other settings,
    and the folder's lock while it runs (the rules are cse.runs').

    Subclasses write their records (``write_on_batch_end``) and summarise them (``summarise``).
    """

    records = "metrics"  # the merged file is <records>.jsonl
    products: tuple[str, ...] = ()  # folders and files a rerun with overwrite removes

    def __init__(self, output_dir: str | None = None, overwrite: bool = False) -> None:
        super().__init__()
        self.output_dir, self.overwrite = output_dir, overwrite
        self.out = Path(output_dir or ".")
        self.rank = 0
        self.locked = False  # whether this writer took the folder's lock (and so releases it)
        self.summarised = False  # whether this run wrote its summary (on_predict_end)

    # -- files ----------------------------------------------------------------------------------

    def rank_file(self, kind: str, rank: int | None = None) -> Path:
        return self.out / "metrics" / f"{kind}-rank{self.rank if rank is None else rank}.jsonl"

    def rows(self, kind: str | None = None) -> dict[str, dict]:
        """Every key's record from the merged file and every rank's file (latest wins)."""
        kind = kind or self.records
        rows: dict[str, dict] = {}
        for file in [self.out / f"{kind}.jsonl", *sorted((self.out / "metrics").glob(f"{kind}-rank*.jsonl"))]:
            for row in read_jsonl(file):
                rows[row["key"]] = {**rows.get(row["key"], {}), **row}
        return dict(sorted(rows.items()))

    def done_keys(self) -> set[str]:
        """Keys whose record is written (the record is written last)."""
        return set(self.rows())

    def merge(self, kind: str, rows: Iterable[dict]) -> None:
        """Write the merged ``<kind>.jsonl`` and drop the rank files it replaces."""
        write_text_atomic(self.out / f"{kind}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        for file in (self.out / "metrics").glob(f"{kind}-rank*.jsonl"):
            file.unlink()
        if (self.out / "metrics").is_dir() and not any((self.out / "metrics").iterdir()):
            (self.out / "metrics").rmdir()

    # -- before the run -------------------------------------------------------------------------

    def check_before_run(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Subclasses: fail now on what would fail later (missing weight files...)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Fail before hours of sampling, not after; tell the data what is already done."""
        if stage != "predict":
            return
        self.summarised = False
        self.out, self.rank = Path(self.output_dir or trainer.default_root_dir), trainer.global_rank
        self.check_writable()
        self.hold_lock(trainer)
        self.check_before_run(trainer, pl_module)
        settings = self.settings(trainer, pl_module)
        replace = self.overwrite or self.check_settings(settings)
        if replace and trainer.is_global_zero:
            self.clear()
        trainer.strategy.barrier("results folder ready")
        if trainer.is_global_zero:
            remove_temporaries(self.out)
            repair_jsonl(self.out / f"{self.records}.jsonl")
            runs.write_record(self.out, settings)
        trainer.strategy.barrier("merged records repaired")
        for kind in (self.records, "skipped"):
            repair_jsonl(self.rank_file(kind))
        done = self.done_keys()
        if done:
            datamodule = trainer.datamodule
            if datamodule is None or not hasattr(datamodule, "exclude"):
                raise ValueError(
                    f"{self.out} already holds results for {len(done)} inputs and the data cannot leave them out; use "
                    "a data module with `exclude` (cse.data.ImageDataModule), another output folder, or overwrite=true"
                )
            datamodule.exclude = done

    def check_writable(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write-test-rank{self.rank}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            message = f"cannot write results into {self.out} ({error}); choose another output folder"
            raise PermissionError(message) from error

    def hold_lock(self, trainer: Trainer) -> None:
        """One run at a time in a folder: rank zero takes its lock, and every rank stops if another
        run holds it (see cse.runs.lock)."""
        refused = None
        if trainer.is_global_zero:
            try:
                self.locked = runs.lock(self.out)
            except runs.RunFolderError as error:
                refused = str(error)
        refused = trainer.strategy.broadcast(refused)
        if refused:
            raise runs.RunFolderError(refused)

    def release_lock(self) -> None:
        if self.locked:
            runs.unlock(self.out)
            self.locked = False

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # a rerun with nothing left to restore (a run killed after its last batch, before its summary)
        # runs no predict loop, so Lightning calls no on_predict_end: summarise here
        try:
            if stage == "predict" and not self.summarised and trainer.is_global_zero and self.rows():
                self.summarise(pl_module)
        finally:
            self.release_lock()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.release_lock()  # Lightning skips teardown after an exception

    @staticmethod
    def settings(trainer: Trainer, pl_module: LightningModule) -> dict:
        """What decides the outputs: the module's settings and the data's (source, image size)."""
        settings = pl_module.settings() if hasattr(pl_module, "settings") else {"module": type(pl_module).__name__}
        hparams = getattr(trainer.datamodule, "hparams", {})
        names = ("predict", "image_size", "predict_count", "points", "reference", "mask", "kernel", "noise_std")
        data = {name: hparams.get(name) for name in names}
        return {**settings, "data": {k: v for k, v in data.items() if v is not None}}

    def check_settings(self, settings: dict) -> bool:
        """Refuse to add results made with other settings to a folder (a rerun must not mix); more
        inputs with the same settings extend the run. Returns whether the folder's earlier files
        are stale (a record of other settings with no results) and are to be replaced."""
        if self.overwrite:
            return False
        return runs.check_run(self.out, settings, has_results=bool(self.rows()), may_grow=GROWING_COUNTS)

    def clear(self) -> None:
        products = (*self.products, "metrics", f"{self.records}.jsonl", "skipped.jsonl", "summary.json", runs.RECORD)
        runs.clear(self.out, products)

    # -- at the end -----------------------------------------------------------------------------

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier("results written")  # every rank's files exist before anyone reads them
        self.summarised = True
        if trainer.is_global_zero:
            self.summarise(pl_module)

    def summarise(self, pl_module: LightningModule) -> dict[str, Any]:
        raise NotImplementedError


class RestorationWriter(ResultsWriter):
    """Writes restorations, their metrics and a summary; resumable, and honest about its inputs.

    Args:
        output_dir: the results folder (default: the trainer's ``default_root_dir``, which the CLI
            derives from the config files: ``outputs/<task>/<method>``).
        lpips: LPIPS per image (AlexNet weights from a local file); fid: FID/KID over the set.
        feature_network: FID/KID features (None: Inception), e.g. ``cse.features.DigitsFeatures``.
        metric_weights_dir: folder of the metric networks' weight files (default: torch hub's).
        kid_subset_size: images per KID subset (fixed, so that kid_std means something; KID is
            left out for smaller sets).
        grid_size: images in ``grid.png``.
        overwrite: delete earlier results in the folder and start again (otherwise a rerun with
            other settings stops with an error, and one with the same settings, or more inputs,
            resumes); on the command line ``--trainer.callbacks.init_args.overwrite=true``.
        strict: fail the run (after writing everything) when any restoration is flagged as
            inconsistent with its measurement (``residual_flag`` in the summary).
    """

    products = ("source", "measurement", "control", "recon", "diversity", "grid.png")

    def __init__(
        self,
        output_dir: str | None = None,
        lpips: bool = True,
        fid: bool = True,
        feature_network: nn.Module | None = None,
        metric_weights_dir: str | None = None,
        kid_subset_size: int = 100,
        grid_size: int = 8,
        overwrite: bool = False,
        strict: bool = False,
    ) -> None:
        super().__init__(output_dir, overwrite)
        self.strict = strict
        self.lpips, self.fid, self.feature_network = lpips, fid, feature_network
        self.metric_weights_dir, self.kid_subset_size, self.grid_size = metric_weights_dir, kid_subset_size, grid_size

    def path(self, folder: str, key: str) -> Path:
        return self.out / folder / f"{key}.png"

    def done_keys(self) -> set[str]:
        """Images whose metrics line exists (written last) and whose restoration is on disk."""
        return {key for key in self.rows() if self.path("recon", key).exists()}

    def check_before_run(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.lpips:
            weights_file(ALEXNET_FILE, self.metric_weights_dir, "LPIPS")
        if self.fid and self.feature_network is None:
            weights_file(INCEPTION_FILE, self.metric_weights_dir, "FID/KID")

    def write_on_batch_end(
        self, trainer, pl_module, prediction: Restoration, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        for i, key in enumerate(prediction.keys):
            if prediction.source[i] is not None:  # a clean reference (simulated runs, paired folders)
                save_png(prediction.source[i], self.path("source", key))
            if prediction.measurement[i].ndim == 3:  # image operators only
                save_png(prediction.measurement[i], self.path("measurement", key))
            save_png(prediction.control[i], self.path("control", key))
            if prediction.diversity is not None:
                save_png(heat_map(prediction.diversity[i], vmax=DIVERSITY_SCALE), self.path("diversity", key))
            save_png(prediction.recon[i], self.path("recon", key))
        append_jsonl(self.rank_file("metrics"), prediction.metrics)  # last: the line marks the images done
        append_jsonl(self.rank_file("skipped"), [{"key": k, "reason": r} for k, r in prediction.skipped])

    def load(self, folder: str, keys: list[str]) -> torch.Tensor:
        return torch.stack([read_png(self.path(folder, key)) for key in keys])

    def with_reference(self, keys: list[str]) -> list[str]:
        """The keys that have a clean reference (``source/``): all on simulated runs."""
        return [key for key in keys if self.path("source", key).exists()]

    def summarise(self, pl_module: LightningModule | None = None) -> dict[str, Any]:
        """Merge every rank's lines, add LPIPS and FID/KID, write metrics.jsonl, summary.json, grid.png."""
        rows = {key: row for key, row in self.rows().items() if self.path("recon", key).exists()}
        skipped = {key: row["reason"] for key, row in self.rows("skipped").items() if key not in rows}
        summary: dict[str, Any] = {"count": len(rows)}
        referenced = self.with_reference(list(rows))
        if len(referenced) < len(rows):
            summary["quality_note"] = NO_REFERENCE.format(missing=len(rows) - len(referenced), count=len(rows))
        if rows:
            self.add_lpips({key: rows[key] for key in referenced})
            summary |= means(rows.values())
            if self.fid and len(referenced) >= 2:
                summary |= self.feature_distances(referenced)
            if summary.get("kid") is not None and summary["kid"] <= 0:
                summary["kid_note"] = KID_NOTE
            if self.fid and len(referenced) >= 2 and summary.get("kid") is None:
                summary["kid_note"] = f"KID needs at least kid_subset_size={self.kid_subset_size} images"
        summary["skipped"] = skipped
        if flag := residual_flag(rows):
            summary["residual_flag"] = flag
        self.merge("metrics", rows.values())
        self.merge("skipped", [{"key": k, "reason": r} for k, r in skipped.items()])
        write_text_atomic(self.out / "summary.json", json.dumps(summary, indent=2))
        if not rows:
            reasons = "; ".join(f"{k}: {r}" for k, r in list(skipped.items())[:5])
            raise InputError(f"nothing was restored into {self.out}: {len(skipped)} input(s) skipped ({reasons})")
        self.write_grid(list(rows)[: self.grid_size])
        if flag and self.strict:
            raise ResultsFlagged(f"{flag['note']} (strict=true; results and summary.json are written in {self.out})")
        return summary

    def add_lpips(self, rows: dict[str, dict]) -> None:
        """LPIPS of each restored image against its source, for rows that lack it."""
        missing = [key for key, row in rows.items() if "lpips" not in row]
        if not self.lpips or not missing:
            return
        metric = LPIPS(self.metric_weights_dir)
        for start in range(0, len(missing), 32):
            chunk = missing[start : start + 32]
            for key, value in zip(chunk, metric(self.load("recon", chunk), self.load("source", chunk)), strict=True):
                rows[key]["lpips"] = float(value)

    def feature_distances(self, keys: list[str]) -> dict:
        batches = [keys[start : start + 64] for start in range(0, len(keys), 64)]
        real = (self.load("source", batch) for batch in batches)
        fake = (self.load("recon", batch) for batch in batches)
        return feature_distances(real, fake, self.feature_network, self.metric_weights_dir, self.kid_subset_size)

    def write_grid(self, keys: list[str]) -> None:
        """Labelled rows: the clean source (where there is one), the measurement (image operators),
        the CSE's control image (the lifted measurement), the restoration."""
        rows = [("source", "source"), ("measurement", "measurement"), ("control", "measurement, lifted")]
        rows = [(folder, label) for folder, label in rows if all(self.path(folder, k).exists() for k in keys)]
        rows.append(("recon", "restored"))
        images = [(label, [read_png(self.path(folder, key)) for key in keys]) for folder, label in rows]
        save_png(labelled_grid(images), self.out / "grid.png")


class AnalysisWriter(ResultsWriter):
    """Writes the records of an analysis module (``predict_step`` returns a list of dicts, one per
    input, each with its ``key``) to ``analysis.jsonl``, and at the end the module's
    ``summarise(rows)`` to ``summary.json`` and its ``plot(summary, folder)``."""

    records = "analysis"
    products = ("plot.png", "table.md")

    def write_on_batch_end(
        self, trainer, pl_module, prediction: list[dict], batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        append_jsonl(self.rank_file("analysis"), prediction)

    def summarise(self, pl_module: LightningModule) -> dict[str, Any]:
        rows = self.rows()
        self.merge("analysis", rows.values())
        summary = pl_module.summarise(list(rows.values()))
        write_text_atomic(self.out / "summary.json", json.dumps(summary, indent=2))
        pl_module.plot(summary, self.out)
        return summary


def residual_flag(rows: dict[str, dict]) -> dict | None:
    """The restorations whose residual ||A(x) - y|| is over RESIDUAL_WARNING times ||y||: not
    restorations of their measurement (a step size far too large, a wrong operator); None if none."""
    relative = {key: row.get("residual_relative", 0.0) for key, row in rows.items()}
    far = {key: value for key, value in relative.items() if value > RESIDUAL_WARNING}
    if not far:
        return None
    return {
        "count": len(far),
        "threshold": RESIDUAL_WARNING,
        "worst": dict(sorted(far.items(), key=lambda item: -item[1])[:10]),
        "note": f"{len(far)} of {len(rows)} restorations have ||A(x) - y|| over {RESIDUAL_WARNING:g} x ||y||: "
        "they do not explain their measurements (is the step size far too large?)",
    }


NO_REFERENCE = (
    "{missing} of {count} restorations have no clean reference: PSNR, SSIM, LPIPS and FID/KID are over the "
    "others only (none when no reference is given; --data.init_args.reference=FOLDER gives them), the residual "
    "||A(x) - y|| over all"
)


def means(rows: Iterable[dict]) -> dict[str, float]:
    """Mean of every numeric per-image field (costs included), over the images that have it."""
    rows = list(rows)
    names = sorted({n for row in rows for n, v in row.items() if isinstance(v, int | float) and n != "batch_size"})
    return {n: float(np.mean([row[n] for row in rows if isinstance(row.get(n), int | float)])) for n in names}
