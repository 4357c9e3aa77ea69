"""Run folders: whether a folder belongs to this run, for every command that writes one.

A run folder holds one run. Its record says which settings made what is in it: ``run.json``
(``{"fingerprint", "settings"}``) for ``predict`` and ``data_tools``, the ``config.yaml`` that
LightningCLI saves for ``fit``. Every writer asks this module the same questions, with plain paths
and dicts (no Lightning here):

- :func:`check_run` -- may this run write here? The same settings resume; more inputs with the same
  settings extend the run (``may_grow``); a folder whose record has no results beside it (a run
  that failed before producing anything) is not a run to protect; anything else is refused, with
  the options that replace the folder or choose another.
- :func:`lock` -- one run at a time: a second run started into a folder in use is refused at once
  (``flock`` on ``<root>/.lock``, which the system releases when the process ends, even on kill -9).
- :func:`check_fit_folder` -- a fit never starts afresh over checkpoints, nor resumes them with other
  settings.
- :func:`export_path`, :func:`check_export`, :func:`export` -- where a trainer saves what it
  trained, and never over another model unless asked.

Every refusal is a :class:`RunFolderError`: one line that says what to do.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from cse.digest import differences, fingerprint, flatten
from cse.images import usual_file_mode, write_text_atomic

RECORD = "run.json"
LOCK = ".lock"
CHOOSE_FOLDER = "--trainer.default_root_dir=DIR"
"""How ``python -m cse`` chooses another run folder."""

OVERWRITE_RESULTS = "--trainer.callbacks.init_args.overwrite=true"
"""How ``python -m cse predict`` replaces a folder's results: the configs' trainer has one
callback, the writer (configs/*/predict.yaml), which this option path reaches."""

FIT_RESUME_MAY_CHANGE = frozenset(
    {"ckpt_path", "config", "trainer.max_steps", "trainer.max_epochs", "model.init_args.overwrite_export"}
)
"""What a resumed fit may change: how long it trains, and whether it may replace its export."""


class RunFolderError(FileExistsError):
    """A folder that holds another run, or one in progress; the message says what to do."""


# -- records ---------------------------------------------------------------------------------------


def as_json(settings: dict) -> dict:
    """Settings as they read back from JSON (tuples as lists, objects as strings)."""
    return json.loads(json.dumps(settings, default=str))


def read_record(root: Path) -> dict | None:
    """The folder's ``run.json``, or None when it has none."""
    path = Path(root) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(root: Path, settings: dict) -> None:
    """Record the settings that make what the folder holds (written atomically)."""
    record = {"fingerprint": fingerprint(settings), "settings": as_json(settings)}
    write_text_atomic(Path(root) / RECORD, json.dumps(record, indent=2, default=str))


def covers(new: object, old: object) -> bool:
    """Whether a count ``new`` takes at least the inputs of ``old`` (None: all of them)."""
    if new is None:
        return True
    return old is not None and isinstance(new, int | float) and isinstance(old, int | float) and new >= old


def compare(old: dict, new: dict, may_change: Collection[str] = (), may_grow: Collection[str] = ()) -> str:
    """What differs between two settings trees (``differences``), leaving out the keys in
    ``may_change`` and the counts in ``may_grow`` that grew; empty for the same run."""
    old, new = as_json(old), as_json(new)
    old_flat, new_flat = flatten(old), flatten(new)
    grown = {key for key in may_grow if covers(new_flat.get(key), old_flat.get(key))}
    return differences(old, new, ignore={*may_change, *grown})


def refusal(root: Path, what: str, why: str, overwrite: str, choose: str) -> RunFolderError:
    """The one-line refusal: what the folder holds, why it is not this run's, and the two ways out
    (settings such as a measurement's repr span lines: they are joined)."""
    why = " ".join(why.split())
    return RunFolderError(
        f"{root} holds {what} {why}. Choose another folder ({choose}), or pass {overwrite} to replace them"
    )


def check_run(
    root: Path,
    settings: dict,
    has_results: bool,
    overwrite: str = OVERWRITE_RESULTS,
    what: str = "results",
    may_grow: Collection[str] = (),
    may_change: Collection[str] = (),
    choose: str = CHOOSE_FOLDER,
) -> bool:
    """Refuse to add this run's outputs to a folder that holds another run's (:class:`RunFolderError`
    naming what differs, the ``overwrite`` option and the ``choose`` one). Returns whether the
    folder's earlier contents are stale: a record of other settings with no results, which the
    caller clears and replaces."""
    record = read_record(root)
    if record is None:
        if has_results:
            raise refusal(root, what, f"without a {RECORD} saying what made them", overwrite, choose)
        return False
    if record.get("fingerprint") == fingerprint(settings):
        return False
    recorded = record.get("settings")
    details = compare(recorded, settings, may_change, may_grow) if recorded is not None else ""
    if recorded is not None and not details:
        return False  # the same run with more inputs: it is extended
    if not has_results:
        return True  # a run that failed before producing anything: nothing to protect
    details = details or f"its {RECORD} records no settings"
    raise refusal(root, what, f"made with other settings ({details})", overwrite, choose)


def holds(root: Path, names: Iterable[str]) -> bool:
    """Whether any of ``names`` (names or glob patterns) under ``root`` is a file, or a folder with a
    file in it (an empty folder left by a run that made nothing holds nothing)."""
    for name in names:
        for path in Path(root).glob(name):
            if path.is_file() or any(p.is_file() for p in path.rglob("*")):
                return True
    return False


def clear(root: Path, names: Iterable[str]) -> None:
    """Delete what a run wrote into ``root``: files and folders by name or glob pattern."""
    for name in names:
        for path in Path(root).glob(name):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


# -- one run at a time ------------------------------------------------------------------------------

HELD: dict[Path, int] = {}
"""Locks this process holds: folder -> open file descriptor of its lock file."""


def lock(root: Path, choose: str = CHOOSE_FOLDER) -> bool:
    """Take the folder's lock for this process, or refuse at once if another process holds it.
    Returns whether it was taken now (False: this process already held it, e.g. a second
    ``main()`` in one Python session); the lock lasts until :func:`unlock` or the process ends."""
    root = Path(root).resolve()
    if root in HELD:
        return False
    root.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, usual_file_mode())
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 64).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise RunFolderError(
            f"{root} is in use by another run (process {holder}); wait for it to end, or choose another "
            f"folder ({choose})"
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    HELD[root] = descriptor
    return True


def unlock(root: Path) -> None:
    """Release the folder's lock if this process holds it (closing the file releases ``flock``)."""
    descriptor = HELD.pop(Path(root).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)


@contextmanager
def job(
    root: Path,
    settings: dict,
    products: Collection[str],
    overwrite: bool,
    what: str,
    may_grow: Collection[str] = (),
    may_change: Collection[str] = (),
    active: bool = True,
) -> Iterator[None]:
    """A job of ``python -m data_tools`` in its ``--out`` folder: locked while it runs; refused if
    the folder holds another job's ``products`` (names or globs), which ``overwrite`` (``--overwrite``)
    or a stale record deletes first; the settings recorded. ``active``: whether this process is the
    one that decides (rank zero), the others only run."""
    root = Path(root)
    taken = lock(root, "another --out") if active else False
    try:
        if active:
            options = {"may_grow": may_grow, "may_change": may_change, "choose": "another --out"}
            if overwrite or check_run(root, settings, holds(root, products), "--overwrite", what, **options):
                clear(root, [*products, RECORD])
            write_record(root, settings)
        yield
    finally:
        if taken:
            unlock(root)


# -- fit: checkpoints and exports -------------------------------------------------------------------


def check_fit_folder(
    root: Path, settings: dict, ckpt_path: str | None, may_change: Collection[str] = FIT_RESUME_MAY_CHANGE
) -> None:
    """A fit never starts afresh over a folder's checkpoints, nor resumes them with other settings
    than the folder's ``config.yaml`` (a folder derived from config files is shared by overrides)."""
    checkpoints = sorted((Path(root) / "checkpoints").glob("*.ckpt"))
    if not checkpoints:
        return
    if ckpt_path is None:
        raise RunFolderError(
            f"{root} holds checkpoints of an earlier run ({checkpoints[-1].name}, ...): resume it with "
            f"--ckpt_path last, or start afresh in another folder ({CHOOSE_FOLDER}) or after deleting it"
        )
    saved = Path(root) / "config.yaml"
    if not saved.is_file():
        return
    details = compare(yaml.safe_load(saved.read_text()), settings, may_change=may_change)
    if details:
        raise RunFolderError(
            f"{root} holds a run made with other settings ({details}); resuming it would mix the two. "
            f"Give this run its own folder with {CHOOSE_FOLDER}"
        )


def export_path(root: Path, given: str | None, name: str) -> Path:
    """Where a trainer saves what it trained: ``given``, else ``<root>/<name>`` (the run's own)."""
    return Path(given) if given else Path(root) / name


def resumes_own_run(ckpt_path: str | None, checkpoint_dir: str | None) -> bool:
    """Whether a fit resumes a checkpoint its own checkpoint callback wrote (not another run's)."""
    if ckpt_path is None or checkpoint_dir is None:
        return False
    return Path(ckpt_path).resolve().parent == Path(checkpoint_dir).resolve()


def check_export(path: Path, own: bool, overwrite: bool) -> None:
    """Refuse, before training, an export that already holds a model (a file, or a folder with files)
    unless it is the run's own (a resumed run replaces it) or ``overwrite``."""
    taken = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if taken and not own and not overwrite:
        raise RunFolderError(
            f"the export {path} already holds a model; choose another export_dir, or set overwrite_export=true "
            "to replace it"
        )


def export(path: Path, save: Callable[[Path], object]) -> None:
    """``save(path)`` (its folder made first), with the permissions of any file the user makes
    (safetensors writes 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save(path)
    mode = usual_file_mode()
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        file.chmod(mode)
