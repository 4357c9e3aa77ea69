"""Errors a user causes, shown as one line (the traceback stays behind ``CSE_TRACEBACK=1``).

Two kinds reach the command line: errors that explain themselves (a missing model folder, an
unwritable folder: :data:`CLEAR_ERRORS`), and :class:`ConfigError`, a value of a config file or
of the command line that the parser or a class's ``__init__`` refused, with the option to fix.
"""

from __future__ import annotations

import inspect
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import NoReturn


class PretrainedNotFoundError(FileNotFoundError):
    """A model folder or hub id that could not be loaded; the message says how to fix it.
    ``component`` says what it was ("diffusion prior", "ControlNet (CSE)", ...), so that a front end
    can name its own option for passing a folder instead."""

    def __init__(self, message: str, component: str = "model") -> None:
        super().__init__(message)
        self.component = component

    def __reduce__(self):  # pickled whole (DDP and multiprocessing pass exceptions between processes)
        return type(self), (str(self), self.component)


class CSEMismatchError(ValueError):
    """A CSE attached to a prior for a measurement it was not trained with."""


class ResultsFlagged(RuntimeError):
    """A strict run whose results were written but flagged (see ``RestorationWriter(strict=True)``)."""


class InputError(ValueError):
    """Input data that cannot be used as given; the message names the files and what to do."""


CLEAR_ERRORS = (
    PretrainedNotFoundError,
    CSEMismatchError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    InputError,
    ResultsFlagged,
)
"""Errors whose message says what to do: shown alone, not under the config parser's traceback."""


class ConfigError(ValueError):
    """A config or command-line value that was refused; its message names the option to fix."""


def fail_clearly(error: BaseException, hint: str = "", status: int = 1) -> NoReturn:
    """An error that explains itself, as one line on stderr (no traceback), and exit ``status``."""
    print(f"error: {error}{hint}\n(set CSE_TRACEBACK=1 to see the full traceback)", file=sys.stderr)
    raise SystemExit(status) from None


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and its chain of causes, outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def innermost(error: BaseException) -> BaseException:
    """The last error in ``error``'s chain of causes: the original reason."""
    return list(causes(error))[-1]


def clear_error(error: BaseException) -> BaseException | None:
    """The first error in ``error``'s chain that explains itself (CLEAR_ERRORS or ConfigError)."""
    return next((e for e in causes(error) if isinstance(e, (*CLEAR_ERRORS, ConfigError))), None)


def option_hint(error: BaseException) -> str:
    """Where a config passes the folder that could not be loaded."""
    if not isinstance(error, PretrainedNotFoundError):
        return ""
    option = "controlnet" if error.component.startswith("ControlNet") else "id_or_path"
    return f" In a config or on the command line: --model.init_args.prior.init_args.{option}=DIR."


def refusing_class(error: BaseException) -> type | None:
    """The class whose ``__init__`` raised ``error`` (the innermost such frame), if any."""
    tb, found = error.__traceback__, None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "__init__" and "self" in frame.f_locals:
            found = type(frame.f_locals["self"])
        tb = tb.tb_next
    return found


def given_option(argv: Sequence[str], name: str) -> str | None:
    """The command-line option that set ``name`` (``--a.b.name=v`` or ``--a.b.name v``), if any."""
    pattern = re.compile(rf"^--(?:[\w.]+\.)?{re.escape(name)}(?:=.*)?$")
    for index, arg in enumerate(argv):
        if pattern.match(arg):
            return arg if "=" in arg or index + 1 >= len(argv) else f"{arg} {argv[index + 1]}"
    return None


def init_parameters(cls: type) -> list[str]:
    try:
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        return []


def config_error(error: BaseException, argv: Sequence[str]) -> ConfigError:
    """One line for a value refused while parsing or instantiating a config: the innermost reason,
    the class that refused it and the option that gave it (the parser's union and key wrappers dropped)."""
    chain = list(causes(error))
    missing = next((e for e in chain if type(e).__name__ == "InterpolationKeyError"), None)
    if missing is not None:  # a config reads ${steps.NAME} that the task's step table lacks
        key = (re.search(r"steps\.\w+", str(missing)) or re.search(r".+", str(missing))).group(0)
        return ConfigError(f"{key}: a config reads it from the task's step table, which has none for this task")
    original = chain[-1]
    reason = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    unknown = re.match(r"(?:Key|Option) '([\w.]+)' is not accepted", reason)
    if unknown:
        return ConfigError(f"{reason}{unknown_option_hint(chain, unknown.group(1), argv)}")
    keys = [m.group(1) for e in chain for m in [re.search(r'Parser key "([\w.]+)"', str(e))] if m]
    cls = refusing_class(original)
    where = f"{cls.__module__}.{cls.__qualname__}: " if cls is not None and cls.__module__.startswith("cse") else ""
    named = [p for p in init_parameters(cls) if re.search(rf"\b{p}\b", reason)] if cls else []
    given = next((g for g in (given_option(argv, p) for p in named) if g), None)
    place = f" (given as {given})" if given else f" (option {keys[0]})" if keys else ""
    return ConfigError(f"{where}{reason}{place}")


def unknown_option_hint(chain: list[BaseException], name: str, argv: Sequence[str]) -> str:
    """For an option a class does not take: the class, and the options it does take."""
    text = "\n".join(str(e) for e in chain)
    match = ([None, *re.findall(r"class_path '([\w.]+)'", text)])[-1]  # the innermost class
    given = given_option(argv, name.split(".")[-1])
    hint = f" (given as {given})" if given else ""
    if match:
        try:
            from jsonargparse._util import import_object

            options = init_parameters(import_object(match))
        except (ImportError, AttributeError, ValueError):
            options = []
        taken = f"; it takes {', '.join(options)}" if options else ""
        hint += f" by {match}{taken}"
    return hint


class DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes`` (advice meant for others)."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


OTHER_PEOPLES_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's own use of torch's pytree
    r"No seed found, seed set to 0",  # every run is seeded per sample (cse.seeding), not globally
    r"Metric `Kernel Inception Distance` will save all extracted features",  # features of a few images
)


def quiet_other_peoples_advice() -> None:
    """Silence what is not the user's business: Lightning's product tips and internal deprecations,
    torchmetrics' memory note, and diffusers' advice to install ``accelerate`` (printed once per
    loaded network; loading works the same without it)."""
    for message in OTHER_PEOPLES_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    tips = DropMessages("💡 Tip:")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(tips)
    accelerate = DropMessages("Cannot initialize model with low cpu memory usage")
    logging.getLogger("diffusers.models.modeling_utils").addFilter(accelerate)
