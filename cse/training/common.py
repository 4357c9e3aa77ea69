"""What every trainer shares: per-sample seeded draws and loss, the skipped empty batch, and the
optimizer and learning-rate schedule given in the config."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from cse.priors.diffusers_prior import DiffusersPrior
from cse.records import Batch, is_empty
from cse.seeding import generators_from_seeds, randn, seed_from_key

Step = TypeVar("Step", bound=Callable[..., Any])


def generators(sample_ids: list[str], salt: str) -> list[torch.Generator]:
    """One generator per sample, seeded by ``(salt, sample id)``."""
    return generators_from_seeds([seed_from_key(s, salt) for s in sample_ids])


def seeded_loss(
    prior: DiffusersPrior, x0: Tensor, sample_ids: list[str], salt: str, control: Tensor | None = None
) -> Tensor:
    """The prior's training loss (:meth:`DiffusersPrior.loss`), averaged over the batch, at a timestep
    and noise drawn per sample from the seed of ``(salt, sample id)``."""
    draws = generators(sample_ids, f"{salt}:t")
    t = torch.cat([torch.randint(0, prior.schedule.num_train_steps, (1,), generator=g) for g in draws])
    return prior.loss(x0, t.to(x0.device), randn(draws, x0.shape[1:], like=x0), control).mean()


def skips_empty_batches(step: Step) -> Step:
    """A ``training_step`` or ``validation_step`` that returns None on an empty batch (Lightning then
    skips the optimizer step) instead of measuring or encoding a ``[0, C, 0, 0]`` tensor."""

    @functools.wraps(step)
    def guarded(self, batch: Batch, batch_idx: int, *args: Any, **kwargs: Any) -> Any:
        return None if is_empty(batch) else step(self, batch, batch_idx, *args, **kwargs)

    return guarded  # type: ignore[return-value]


OPTIMIZER_ARGUMENTS = ["optimizer", "lr_scheduler"]
"""Left out of ``save_hyperparameters``: a checkpoint's hyper-parameters are loaded weights-only on
resuming, which refuses callables; the optimizer's state in the checkpoint holds its settings, and
the run's ``config.yaml`` its class."""


class ConfiguredOptimizer:
    """``configure_optimizers`` from the module's ``optimizer`` and ``lr_scheduler`` arguments
    (LightningCLI's ``OptimizerCallable`` and ``LRSchedulerCallable``: a config gives them with
    ``class_path`` and ``init_args``) over :meth:`trainable_parameters`. The schedule, if any, steps
    with every optimizer step, as the recipes count steps (``max_steps``), not epochs."""

    make_optimizer: OptimizerCallable
    make_lr_scheduler: LRSchedulerCallable | None

    def keep_settings(
        self, optimizer: OptimizerCallable, lr_scheduler: LRSchedulerCallable | None, ignore: Iterable[str] = ()
    ) -> None:
        """In the module's ``__init__``: its arguments saved as hyper-parameters (the caller's frame;
        ``ignore``, the optimizer and the schedule left out) and the optimizer and schedule kept."""
        caller = inspect.currentframe().f_back
        self.save_hyperparameters(ignore=[*ignore, *OPTIMIZER_ARGUMENTS], frame=caller)
        self.make_optimizer, self.make_lr_scheduler = optimizer, lr_scheduler

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        raise NotImplementedError

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        optimizer = self.make_optimizer(self.trainable_parameters())
        if self.make_lr_scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.make_lr_scheduler(optimizer), "interval": "step"},
        }
