"""``python -m cse fit|validate|test|predict --config ...`` (LightningCLI)."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI


def main(args: ArgsType = None) -> LightningCLI:
    """Model and data are given by ``class_path`` in the YAML, so any module of the project can run."""
    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "python -m cse"},
        args=args,
    )
