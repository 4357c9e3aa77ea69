"""``python -m cse fit|validate|test|predict --config ...`` (LightningCLI)."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI


class CLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # predict writes its results to disk as it goes (cse.callbacks); keeping every
        # prediction in memory as well would hold all restored images until the end
        if any(action.dest == "return_predictions" for action in parser._actions):
            parser.set_defaults(return_predictions=False)


def main(args: ArgsType = None) -> LightningCLI:
    """Model and data are given by ``class_path`` in the YAML, so any module of the project can run."""
    return CLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "python -m cse"},
        args=args,
    )
