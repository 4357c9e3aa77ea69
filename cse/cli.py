"""``python -m cse fit|validate|test|predict --config ...`` (LightningCLI).

Configs compose: a task file (prior, measurement, data, trainer, and ``task: <tier>/<task>``, its
column in the tier's step table ``configs/<tier>/steps.yaml``) and a method file (``method: NAME``,
an entry of ``cse.samplers.registry``), e.g.::

    python -m cse predict --config configs/digits/sr4/task.yaml --config configs/samplers/dmap_full.yaml

Before parsing, ``compose`` puts the method's sampler, the registry's settings with the table's
cell, where the method file stands on the command line, so later files and options override it
(``--model.init_args.sampler.init_args.zeta=3``) and the sampler's signature checks it.

Everything a run writes (results, checkpoints, logs, the exported CSE) goes under one folder,
``trainer.default_root_dir``; unless given, it is derived from the config files:
``outputs/<folder of the first config>/<names of the others, joined by +>`` (the name of a
first file called ``task.yaml`` is left out), e.g. ``outputs/digits/sr4/dmap_full``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import yaml
from jsonargparse import DefaultHelpFormatter, Namespace, set_parsing_settings
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningCLI

from cse import runs
from cse.errors import (
    ConfigError,
    clear_error,
    config_error,
    fail_clearly,
    innermost,
    option_hint,
    quiet_other_peoples_advice,
)
from cse.paths import PROJECT_ROOT
from cse.samplers.registry import METHODS
from cse.steps import StepTableError, operator_class, sampler_config, task_steps

EPILOG = """Options of a config's model, data and sampler are listed by
  python -m cse predict --config CONFIG [--config ...] --print_config
and of any class, with or without a config, by e.g.
  python -m cse predict --model.init_args.sampler.help cse.samplers.DMAP"""

RUNS = """A run is a task file plus a method file (plus the task's cse.yaml for "+CSE"), e.g.
  python -m cse predict --config configs/digits/sr4/task.yaml --config configs/samplers/dmap_full.yaml \\
      --config configs/digits/sr4/cse.yaml
  python -m cse fit --config configs/digits/sr4/task.yaml --config configs/digits/train_cse.yaml
Results go to outputs/<task>/<method>[+cse]/ unless --trainer.default_root_dir is given."""


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the description's lines kept as written."""


def listing(pattern: str) -> str:
    """The project's config files matching ``pattern`` (relative to its root), one short line."""
    found = sorted(str(p.relative_to(PROJECT_ROOT)) for p in PROJECT_ROOT.glob(pattern))
    return ", ".join(found) if found else "(none in this installation)"


def description() -> str:
    """What ``python -m cse SUBCOMMAND --help`` shows first: how runs are made, the tasks and methods."""
    tasks = listing("configs/**/task.yaml").replace("/task.yaml", "")
    methods = listing("configs/samplers/*.yaml").replace("configs/samplers/", "").replace(".yaml", "")
    wrap = textwrap.TextWrapper(width=100, subsequent_indent="  ").fill
    return "\n".join(
        [RUNS, "", wrap(f"Tasks (configs/<task>/task.yaml): {tasks}"), wrap(f"Methods (configs/samplers/): {methods}")]
    )


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
    """The files given with ``--config`` on a command line, in order; a method named with
    ``--method NAME`` counts as its file, ``NAME.yaml`` (the run folder's name is the same)."""
    given = option_values(argv, "--config") + [(i, f"{name}.yaml") for i, name in option_values(argv, "--method")]
    return [Path(value) for _, value in sorted(given)]


def compose(argv: list[str]) -> list[str]:
    """``argv`` with, after the task file, ``--steps`` (its table's step count and observe_zetas) and
    after each method file (or ``--method NAME``), ``--model.init_args.sampler``: the method's
    registry entry with the task's cell of its step table, at ``--steps.num_steps`` if given.
    Options after these override them. A file that gives them itself (a run's saved config.yaml)
    is taken as it is, so that it reproduces the run."""
    if option_values(argv, "--task"):
        raise StepTableError("--task: a task file names its column of a step table; give the task file instead")
    raw = {index: read_yaml(Path(path)) for index, path in option_values(argv, "--config")}
    task_index = max((index for index, config in raw.items() if "task" in config), default=None)
    task_config = raw.get(task_index, {})
    methods = {
        index: (argv[index].split("=", 1)[-1], config["method"])
        for index, config in raw.items()
        if "method" in config and not has_sampler(config)
    }
    methods |= {index: ("--method", name) for index, name in option_values(argv, "--method")}
    steps = option_values(argv, "--steps.num_steps")
    added: dict[int, list[str]] = {}
    if task_index is not None and "steps" not in task_config:
        added[task_index] = [f"--steps={json.dumps(task_steps(task_config['task']))}"]
    for index, (where, name) in methods.items():
        sampler = composed_sampler(
            where, name, task_config, as_int("--steps.num_steps", steps[-1][1]) if steps else None
        )
        added.setdefault(index, []).append(f"--model.init_args.sampler={json.dumps(sampler)}")
    return [out for index, arg in enumerate(argv) for out in (arg, *added.get(index, []))]


def has_sampler(config: dict) -> bool:
    """Whether a config file gives the sampler itself."""
    model = config.get("model")
    return isinstance(model, dict) and isinstance(model.get("init_args"), dict) and "sampler" in model["init_args"]


def composed_sampler(where: str, name: str, task_config: dict, num_steps: int | None) -> dict:
    """Method ``name`` (given in ``where``) on the task of ``task_config``: ``{class_path, init_args}``."""
    if name not in METHODS:
        raise StepTableError(f"{where}: method: no method {name!r} (known: {', '.join(METHODS)})")
    if "task" not in task_config:
        raise StepTableError(
            f"{where}: method: {name} takes its settings from a task's step table; "
            "no config names a task (task: <tier>/<task>)"
        )
    return sampler_config(task_config["task"], name, operator_class(task_config), num_steps)


def option_values(argv: list[str], name: str) -> list[tuple[int, str]]:
    """``(index of the value's token, value)`` of each ``name VALUE`` or ``name=VALUE`` in ``argv``."""
    found = []
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            found.append((index + 1, argv[index + 1]))
        elif arg.startswith(f"{name}="):
            found.append((index, arg.split("=", 1)[1]))
    return found


def as_int(name: str, value: str) -> int:
    """An option's value as an integer; a one-line error naming the option otherwise."""
    try:
        return int(value)
    except ValueError:
        raise StepTableError(f"{name}: expected an integer, got {value!r}") from None


def read_yaml(path: Path) -> dict:
    """A config file's top level (empty for a file that is missing or not a mapping: the parser says why)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


class CLI(LightningCLI):
    config_files: list[Path] = []
    argv: list[str] = []

    def parse_arguments(self, parser, args) -> None:
        """A command line is composed (``compose``) before it is parsed; a dict or Namespace is parsed as given."""
        argv = sys.argv[1:] if args is None else args
        if not isinstance(argv, list):
            return super().parse_arguments(parser, args)
        self.argv = [str(a) for a in argv]
        self.config_files = config_files(self.argv)
        try:
            self.config = parser.parse_args(compose(self.argv))
        except Exception as error:  # the parser's refusals raise (exit_on_error=False): one line each
            raise refused(error, self.argv) from error

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as error:  # a value an __init__ refused (num_steps=0, zeta=-8, ...): one line
            if clear_error(error) is None and not isinstance(innermost(error), (ValueError, TypeError, KeyError)):
                raise  # a corrupt file, out of memory, a bug: the whole exception
            raise refused(error, self.argv) from error

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--task",
            type=str | None,
            default=None,
            help=argparse.SUPPRESS,  # set by a task file (task: <tier>/<task>)
        )
        parser.add_argument(
            "--method", type=str | None, default=None, help=f"A method instead of a method file: {', '.join(METHODS)}."
        )
        parser.add_argument(
            "--steps",
            type=dict[str, int | list[float]],
            default={},
            help="The task's step count and observe_zetas, from its step table; the observations read ${steps.NAME}.",
        )

    def before_instantiate_classes(self) -> None:
        """Put every output of the run under one folder (derived from the config files if not given)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.default_root_dir is None:
            configs = self.config_files
            trainer.default_root_dir = str(derived_root(configs)) if configs else "outputs/run"
            given = config.get("data") if isinstance(config.get("data"), Namespace) else None
            if given is not None and "MeasurementDataModule" in str(given.get("class_path")):
                # one folder of results per folder of measurements
                trainer.default_root_dir = str(Path(trainer.default_root_dir) / Path(given.init_args.predict).name)
        root = trainer.default_root_dir
        logger = trainer.logger
        is_wandb = isinstance(logger, Namespace) and "WandbLogger" in str(logger.get("class_path"))
        if is_wandb and logger.init_args.get("save_dir") in (None, "."):
            logger.init_args.save_dir = root
        for callback in trainer.callbacks or []:
            if "ModelCheckpoint" in str(callback.get("class_path")) and callback.init_args.get("dirpath") is None:
                callback.init_args.dirpath = str(Path(root) / "checkpoints")

    def before_fit(self) -> None:
        """A run folder holds one run (cse.runs): never start afresh over its checkpoints, nor resume
        them with other settings (a folder derived from config files is shared by command-line
        overrides), nor run beside another run in it."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(config.trainer.default_root_dir)
        if self.trainer.is_global_zero:
            runs.lock(root)  # one run at a time; held until this process ends
        settings = self._parser(self.subcommand).dump(config, skip_none=False, skip_check=True)
        runs.check_fit_folder(root, yaml.safe_load(settings), config.get("ckpt_path"))

    def before_predict(self) -> None:
        """Results are written as they come (cse.callbacks); keeping them in memory too would hold
        every restored image until the end, so ``return_predictions`` defaults to false."""
        arguments = self.config_init[self.subcommand]
        if arguments.get("return_predictions") is None:
            arguments["return_predictions"] = False


def refused(error: BaseException, argv: list[str]) -> BaseException:
    """An error of parsing or instantiating the config: one that explains itself as it is, any other
    as a :class:`ConfigError` naming the reason and the option."""
    clear = clear_error(error)
    return clear if clear is not None else config_error(error, argv)


def class_help(argv: list[str]) -> bool:
    """``--ANY.help CLASS`` without a config: print the options of CLASS's ``__init__`` (the parser
    itself can list them only once it knows the classes above, i.e. from a config)."""
    if config_files(argv):
        return False
    for option, value in zip(argv, argv[1:], strict=False):
        if option.endswith(".help") and option != "--help" and "." in value:
            from jsonargparse import ArgumentParser
            from jsonargparse._util import import_object

            parser = ArgumentParser(prog=f"{value} options", exit_on_error=False)
            parser.add_class_arguments(import_object(value), nested_key=f"{option[2:-5]}.init_args", fail_untyped=False)
            parser.print_help()
            return True
    return False


def main(args: ArgsType = None) -> LightningCLI | None:
    """Model and data are given by ``class_path`` in the YAML, so any module of the project can run."""
    quiet_other_peoples_advice()
    if args is None and class_help(sys.argv[1:]):
        raise SystemExit(0)
    try:
        return make_cli(args)
    except Exception as error:
        clear = clear_error(error)
        if clear is None or args is not None or os.environ.get("CSE_TRACEBACK"):
            raise  # called from Python, or asked for: the whole exception
        fail_clearly(clear, option_hint(clear), status=2 if isinstance(clear, ConfigError) else 1)


def make_cli(args: ArgsType, run: bool = True) -> CLI:
    """The one way a run is built from config files: ``python -m cse``, ``main`` and ``build``."""
    # ${steps.NAME} in a config file means the `steps` of the same subcommand's config
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    usage = "python -m cse {} --config TASK --config METHOD [--config CSE] [--OPTION VALUE ...]"
    subcommands = {
        name: {"description": description(), "epilog": EPILOG, "usage": usage.format(name)}
        for name in ("fit", "validate", "test", "predict")
    }
    return CLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "prog": "python -m cse",
            "parser_mode": "omegaconf+",
            "epilog": EPILOG,
            "exit_on_error": False,
            "formatter_class": HelpFormatter,  # the subcommands' too
            **subcommands,
        },
        args=args,
        run=run,
    )


def build(configs: Sequence[str | Path], *options: str) -> tuple[LightningModule, LightningDataModule, Trainer]:
    """The model, data and trainer that the config files and OPTIONS make (composed and checked as
    ``python -m cse`` does), not run: for scripts and notebooks. No subcommand is run, so its own
    hooks (predict's ``return_predictions``, fit's folder checks) do not apply."""
    quiet_other_peoples_advice()
    cli = make_cli([*(f"--config={c}" for c in configs), *options], run=False)
    return cli.model, cli.datamodule, cli.trainer
