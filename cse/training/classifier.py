"""The small digits classifier whose features serve FID/KID on digits."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only
from safetensors.torch import save_file
from torch import Tensor, nn

from cse.features import DigitsClassifier
from cse.records import Batch
from cse.training.common import ConfiguredOptimizer, generators, skips_empty_batches
from cse.training.exports import ExportsWhenDone


class ClassifierModule(ExportsWhenDone, ConfiguredOptimizer, LightningModule):
    """Train :class:`cse.features.DigitsClassifier` on labelled digits (``label_key: label`` in the
    data), with shifts of up to one pixel so that its features do not hinge on exact pixels.

    Args:
        optimizer: builds the optimizer (default ``torch.optim.Adam`` at torch's defaults: lr 1e-3,
            betas (0.9, 0.999), no weight decay, eps 1e-8).
        lr_scheduler: its schedule, stepped every optimizer step (default none: a constant rate).
    """

    export_name = "classifier.safetensors"

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        export_dir: str | None = None,
        overwrite_export: bool = False,
    ) -> None:
        super().__init__()
        self.keep_settings(optimizer, lr_scheduler)
        self.classifier = DigitsClassifier()

    def step(self, batch: Batch, name: str) -> Tensor:
        x, labels = batch["image"], batch["label"]
        if name == "train":  # each sample's shift seeded by its id and the epoch
            shifts = [
                torch.randint(-1, 2, (2,), generator=g)
                for g in generators(batch["sample_id"], f"shift:{self.current_epoch}")
            ]
            x = torch.stack(
                [torch.roll(image, tuple(s.tolist()), dims=(-2, -1)) for image, s in zip(x, shifts, strict=True)]
            )
        logits = self.classifier(x)
        loss = F.cross_entropy(logits, labels)
        self.log(f"{name}/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log(f"{name}/accuracy", (logits.argmax(1) == labels).float().mean(), prog_bar=True, batch_size=len(labels))
        return loss

    @skips_empty_batches
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        return self.step(batch, "train")

    @skips_empty_batches
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.step(batch, "val")

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return self.classifier.parameters()

    @rank_zero_only
    def on_train_end(self) -> None:
        self.export(lambda path: save_file(self.classifier.state_dict(), path))
