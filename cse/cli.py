"""``python -m cse fit|validate|test|predict --config ...`` (LightningCLI).

Configs compose: a task file (prior, measurement, data, trainer, and its ``sampling:`` block of
step counts and tuned step sizes) and a method file (the sampler, whose settings read the task's
block as ``${sampling.NAME}``), e.g.::

    python -m cse predict --config configs/digits/sr4/task.yaml --config configs/samplers/dmap_full.yaml

Everything a run writes (results, checkpoints, logs, the exported CSE) goes under one folder,
``trainer.default_root_dir``; unless given, it is derived from the config files:
``outputs/<folder of the first config>/<names of the others, joined by +>`` (the name of a
first file called ``task.yaml`` is left out), e.g. ``outputs/digits/sr4/dmap_full``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NoReturn

import yaml
from jsonargparse import Namespace, set_parsing_settings
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI

from cse.digest import differences
from cse.priors.conditioned import CSEMismatchError
from cse.priors.loading import PretrainedNotFoundError

CLEAR_ERRORS = (PretrainedNotFoundError, CSEMismatchError, FileNotFoundError, FileExistsError, PermissionError)
"""Errors whose message says what to do: shown alone, not under the config parser's traceback."""

EPILOG = """Options of a config's model, data and sampler are listed by
  python -m cse predict --config CONFIG [--config ...] --print_config
and of any class by e.g. --model.help cse.restoration.RestorationModule
or --model.init_args.sampler.help cse.samplers.DMAP"""


def derived_root(configs: list[Path]) -> Path:
    """``outputs/<first config's folder under configs/>/<stems of the configs, task.yaml's left out>``."""
    first = Path(configs[0]).resolve()
    parts = first.parent.parts
    folder = (
        Path(*parts[len(parts) - parts[::-1].index("configs") :]) if "configs" in parts else Path(first.parent.name)
    )
    names = [Path(c).stem for c in configs if Path(c).resolve() != first or first.stem != "task"]
    return Path("outputs") / folder / "+".join(names or ["task"])


def config_files(argv: list[str]) -> list[Path]:
    """The files given with ``--config`` on a command line, in order."""
    files = []
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            files.append(Path(argv[index + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return files


class CLI(LightningCLI):
    config_files: list[Path] = []

    def parse_arguments(self, parser, args) -> None:
        argv = sys.argv[1:] if args is None else args
        self.config_files = config_files([str(a) for a in argv]) if isinstance(argv, list) else []
        super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--sampling",
            type=dict[str, int | float | list[float]],
            default={},
            help="The task's step counts and tuned step sizes; method configs read them as ${sampling.NAME}.",
        )

    def before_instantiate_classes(self) -> None:
        """Put every output of the run under one folder (derived from the config files if not given)."""
        config = self.config[self.subcommand]
        trainer = config.trainer
        if trainer.default_root_dir is None:
            configs = self.config_files
            trainer.default_root_dir = str(derived_root(configs)) if configs else "outputs/run"
        root = trainer.default_root_dir
        logger = trainer.logger
        is_wandb = isinstance(logger, Namespace) and "WandbLogger" in str(logger.get("class_path"))
        if is_wandb and logger.init_args.get("save_dir") in (None, "."):
            logger.init_args.save_dir = root
        for callback in trainer.callbacks or []:
            if "ModelCheckpoint" in str(callback.get("class_path")) and callback.init_args.get("dirpath") is None:
                callback.init_args.dirpath = str(Path(root) / "checkpoints")

    def before_fit(self) -> None:
        """A run folder holds one run: never start afresh over its checkpoints, nor resume them with
        other settings (a folder derived from config files is shared by command-line overrides)."""
        config = self.config[self.subcommand]
        settings = self._parser(self.subcommand).dump(config, skip_none=False, skip_check=True)
        check_fit_folder(Path(config.trainer.default_root_dir), settings, config.get("ckpt_path"))

    def before_predict(self) -> None:
        """Results are written as they come (cse.callbacks); keeping them in memory too would hold
        every restored image until the end, so ``return_predictions`` defaults to false."""
        arguments = self.config_init[self.subcommand]
        if arguments.get("return_predictions") is None:
            arguments["return_predictions"] = False


RESUME_MAY_CHANGE = {
    "ckpt_path",
    "config",
    "trainer.max_steps",
    "trainer.max_epochs",
    "model.init_args.overwrite_export",
}


def check_fit_folder(root: Path, settings: str, ckpt_path: str | None) -> None:
    checkpoints = sorted((root / "checkpoints").glob("*.ckpt"))
    if not checkpoints:
        return
    if ckpt_path is None:
        raise FileExistsError(
            f"{root} holds checkpoints of an earlier run ({checkpoints[-1].name}, ...): resume it with "
            "--ckpt_path last, or start afresh in another folder (--trainer.default_root_dir=...) or after deleting it"
        )
    saved = root / "config.yaml"
    if not saved.is_file():
        return
    details = differences(yaml.safe_load(saved.read_text()), yaml.safe_load(settings), ignore=RESUME_MAY_CHANGE)
    if details:
        raise FileExistsError(
            f"{root} holds a run made with other settings ({details}); resuming it would mix the two. "
            "Give this run its own folder with --trainer.default_root_dir=..."
        )


def main(args: ArgsType = None) -> LightningCLI | None:
    """Model and data are given by ``class_path`` in the YAML, so any module of the project can run."""
    # ${sampling.NAME} in a config file means the `sampling` block of the same subcommand's config
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    try:
        return CLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "python -m cse", "parser_mode": "omegaconf+", "epilog": EPILOG},
            args=args,
        )
    except Exception as error:
        clear = clear_error(error)
        if clear is None or args is not None or os.environ.get("CSE_TRACEBACK"):
            raise  # called from Python, or asked for: the whole exception
        fail_clearly(clear, option_hint(clear))


def fail_clearly(error: BaseException, hint: str = "") -> NoReturn:
    """An error that explains itself, as one line on stderr (no traceback), and exit status 1."""
    print(f"error: {error}{hint}\n(set CSE_TRACEBACK=1 to see the full traceback)", file=sys.stderr)
    raise SystemExit(1) from None


def option_hint(error: BaseException) -> str:
    """Where a config passes the folder that could not be loaded."""
    if not isinstance(error, PretrainedNotFoundError):
        return ""
    option = "controlnet" if error.component.startswith("ControlNet") else "id_or_path"
    return f" In a config or on the command line: --model.init_args.prior.init_args.{option}=DIR."


def clear_error(error: BaseException) -> BaseException | None:
    """The first error in ``error``'s chain of causes that explains itself (see CLEAR_ERRORS); a
    missing ``${sampling.NAME}`` becomes such an error too."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, CLEAR_ERRORS):
            return error
        if type(error).__name__ == "InterpolationKeyError":
            missing = re.search(r"sampling\.\w+", str(error))
            key = missing.group(0) if missing else str(error)
            return KeyError(f"{key}: the method file reads it from the task file's `sampling:` block, which lacks it")
        error = error.__cause__ or error.__context__
    return None
