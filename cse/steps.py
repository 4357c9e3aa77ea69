"""A tier's step table, ``configs/<tier>/steps.yaml``: the tier's step count, and per method and task
the method's tuned settings (see ``cse.samplers.registry``). A task file names its column
(``task: digits/sr4``), a method file its method (``method: dps``); ``sampler_config`` joins the two.

The file, as ``scripts/tune_digits.py`` writes it::

    num_steps: 50                           # every method's step count (times its steps_factor)
    tasks: [sr4, inpaint, gblur, nlblur]
    observe_zetas: {sr4: [0.5, 2.0]}       # per task, for the observations (configs/observations)
    methods:
      dps: {sr4: {zeta: 16.0}, ...}        # a cell per task: the method's tuned settings
      dps_scaled: not tuned on this tier   # or why the method is not defined on the tier

A method whose needs a task's operator lacks (PSLD on a nonlinear blur) has no cell there: that it
is not defined follows from the registry, with the reason.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from cse.errors import ConfigError
from cse.samplers.common import Sampler
from cse.samplers.registry import METHODS, method

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KEYS = {"num_steps", "tasks", "observe_zetas", "methods"}
Cells = Mapping[str, Mapping[str, Mapping[str, float]]]


def flow(value: Any) -> str:
    """``value`` as one line of YAML (a table's row stays one line, however long)."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 20).strip()


class StepTableError(ConfigError):
    """A step table, or a config's reference to one, that is wrong: one line naming file and key."""


@dataclass(frozen=True)
class StepTable:
    """A tier's step table, validated against the registry (see the module's docstring)."""

    path: Path
    num_steps: int
    tasks: tuple[str, ...]
    cells: Cells
    """method -> task -> tuned settings."""
    reasons: Mapping[str, str]
    """method -> why it is not defined on the tier."""
    observe_zetas: Mapping[str, list[float]]

    def fail(self, key: str, message: str) -> StepTableError:
        return StepTableError(f"{display(self.path)}: {key}: {message}")

    def cell(self, task: str, name: str, operator: type | None = None) -> dict[str, float]:
        """The tuned settings of method ``name`` on ``task``, whose operator has class ``operator``."""
        if task not in self.tasks:
            raise self.fail("tasks", f"no task {task!r} (tasks: {', '.join(self.tasks)})")
        entry = METHODS.get(name)
        if entry is None:
            raise self.fail("methods", f"no method {name!r} in the registry (known: {', '.join(METHODS)})")
        if name in self.reasons:
            raise self.fail(f"methods.{name}", f"not defined on this tier: {self.reasons[name]}")
        if (unmet := entry.unmet(operator)) is not None:
            raise self.fail(f"methods.{name}.{task}", f"not defined: {unmet}")
        if not entry.tuned:
            return {}
        if task not in self.cells.get(name, {}):
            raise self.fail(f"methods.{name}", f"has no cell for task {task!r}")
        return dict(self.cells[name][task])

    def with_setting(self, name: str, task: str, setting: str, value: float) -> StepTable:
        """The same table with one tuned setting changed (what ``scripts/tune_digits.py`` writes)."""
        self.cell(task, name)
        if setting not in method(name).tuned:
            raise self.fail(f"methods.{name}.{task}.{setting}", f"not a tuned setting of {name}")
        cells = {m: {t: dict(s) for t, s in row.items()} for m, row in self.cells.items()}
        cells[name][task][setting] = value
        return replace(self, cells=cells)

    def dumps(self) -> str:
        """The table as YAML, one line per method, after the file's leading comment lines."""
        lines = [f"num_steps: {self.num_steps}", f"tasks: {flow(list(self.tasks))}"]
        if self.observe_zetas:
            lines.append(f"observe_zetas: {flow({t: list(z) for t, z in self.observe_zetas.items()})}")
        lines.append("methods:")
        for name in METHODS:
            if name in self.reasons:
                lines.append(f"  {name}: {json.dumps(self.reasons[name], ensure_ascii=False)}")
            elif name in self.cells:
                lines.append(f"  {name}: {flow({t: dict(s) for t, s in self.cells[name].items()})}")
        header = []
        if self.path.is_file():
            text = self.path.read_text().splitlines()
            header = text[: next((i for i, line in enumerate(text) if not line.startswith("#")), len(text))]
        return "\n".join([*header, *lines]) + "\n"


def display(path: Path) -> str:
    """``path`` relative to the working folder where it lies under it (error messages)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load(path: Path) -> StepTable:
    """Read and validate a step table; a StepTableError naming the file and key otherwise."""
    path = Path(path)
    if not path.is_file():
        raise StepTableError(f"{display(path)}: no such step table")
    raw = yaml.safe_load(path.read_text()) or {}

    def where(key: str) -> str:
        return f"{display(path)}: {key}"

    if not isinstance(raw, dict) or not {"num_steps", "tasks", "methods"} <= set(raw):
        raise StepTableError(f"{where('num_steps, tasks, methods')}: missing (observe_zetas is optional)")
    if unknown := sorted(set(raw) - KEYS):
        raise StepTableError(f"{where(unknown[0])}: not a key of a step table ({', '.join(sorted(KEYS))})")
    if not isinstance(raw["num_steps"], int) or raw["num_steps"] < 1:
        raise StepTableError(f"{where('num_steps')}: must be a positive integer, got {raw['num_steps']!r}")
    tasks = tuple(raw["tasks"])
    zetas = raw.get("observe_zetas") or {}
    for task in zetas:
        if task not in tasks:
            raise StepTableError(f"{where(f'observe_zetas.{task}')}: no such task (tasks: {', '.join(tasks)})")
    cells, reasons = {}, {}
    for name, row in (raw["methods"] or {}).items():
        if name not in METHODS:
            raise StepTableError(f"{where(f'methods.{name}')}: no such method (known: {', '.join(METHODS)})")
        if isinstance(row, str):
            reasons[name] = row
        elif not isinstance(row, dict):
            raise StepTableError(f"{where(f'methods.{name}')}: a cell per task, or why it is not defined")
        else:
            cells[name] = {
                task: checked_cell(where(f"methods.{name}.{task}"), name, task, tasks, s) for task, s in row.items()
            }
    for name, entry in METHODS.items():
        if entry.tuned and name not in cells and name not in reasons:
            raise StepTableError(f"{where(f'methods.{name}')}: missing (give its cells, or why it is not defined)")
    return StepTable(path, raw["num_steps"], tasks, cells, reasons, {t: list(z) for t, z in zetas.items()})


def checked_cell(where: str, name: str, task: str, tasks: tuple[str, ...], settings: Any) -> dict[str, float]:
    """One cell's settings: exactly the method's tuned ones, each a number."""
    if task not in tasks:
        raise StepTableError(f"{where}: no such task (tasks: {', '.join(tasks)})")
    tuned = set(METHODS[name].tuned)
    if not isinstance(settings, dict) or set(settings) != tuned:
        given = sorted(settings) if isinstance(settings, dict) else settings
        raise StepTableError(f"{where}: expected the settings {sorted(tuned)}, got {given}")
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StepTableError(f"{where}.{key}: must be a number, got {value!r}")
    return dict(settings)


def table_of(task: str, configs: Path = CONFIGS) -> tuple[StepTable, str]:
    """The step table of a task named ``<tier>/<task>`` (``configs/<tier>/steps.yaml``) and its column."""
    tier, _, name = task.rpartition("/")
    if not tier:
        raise StepTableError(f"task: {task!r} must be <tier>/<task>, e.g. digits/sr4 (configs/<tier>/steps.yaml)")
    return load(configs / tier / "steps.yaml"), name


def sampler_config(task: str, name: str, operator: type | None = None, num_steps: int | None = None) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of method ``name`` on ``task`` (``<tier>/<task>``): the
    registry's fixed settings and the step table's cell, at the tier's step count (or ``num_steps``)."""
    table, column = table_of(task)
    entry = method(name)
    settings = entry.settings(num_steps or table.num_steps, table.cell(column, name, operator))
    return {"class_path": entry.class_path, "init_args": settings}


def operator_class(task_config: dict) -> type | None:
    """The class of the measurement's operator a task file gives (None if it gives none, or no class)."""
    try:
        path = task_config["model"]["init_args"]["measurement"]["init_args"]["operator"]["class_path"]
        module, name = path.rsplit(".", 1)
        found = getattr(importlib.import_module(module), name)
    except (KeyError, TypeError, ValueError, ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


def not_defined(task_file: Path, name: str) -> str | None:
    """Why method ``name`` is not defined on the task of ``task_file`` (None: it is)."""
    config = yaml.safe_load(Path(task_file).read_text())
    try:
        sampler_config(config["task"], name, operator_class(config))
    except StepTableError as error:
        return str(error)
    return None


def build_sampler(task: str, name: str, operator: type | None = None) -> Sampler:
    """Method ``name``'s sampler on ``task``, as a run of the two config files would build it."""
    return method(name).sampler(**sampler_config(task, name, operator)["init_args"])


def task_steps(task: str) -> dict[str, Any]:
    """What a task's step table gives beyond the samplers (``steps`` of a run: the observations read
    ``${steps.num_steps}`` and ``${steps.observe_zetas}``)."""
    table, column = table_of(task)
    if column not in table.tasks:
        raise table.fail("tasks", f"no task {column!r} (tasks: {', '.join(table.tasks)})")
    steps: dict[str, Any] = {"num_steps": table.num_steps}
    if column in table.observe_zetas:
        steps["observe_zetas"] = table.observe_zetas[column]
    return steps
