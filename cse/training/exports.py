"""Saving what a trainer trained, once it is done, without overwriting another run's export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cse.images import usual_file_mode


def readable(path: Path) -> None:
    """Give exported files the permissions of any file the user makes (safetensors writes 0600)."""
    mode = usual_file_mode()
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        file.chmod(mode)


class ExportsWhenDone:
    """For trainers that save what they trained at the end: into ``export_dir`` (a folder, or a file
    for single-file exports), by default ``<default_root_dir>/<export_name>``, refusing before
    training a file or a folder that holds files unless ``overwrite_export`` (hyper-parameters of the
    module). A resumed run replaces its own export (the default one, in its folder) without asking."""

    export_name = "model"

    def export_path(self) -> Path:
        given = self.hparams.export_dir
        return Path(given) if given else Path(self.trainer.default_root_dir) / self.export_name

    def export(self, save: Callable[[Path], object]) -> None:
        """``save(path)`` into the export path (its folder made first), readable by others."""
        path = self.export_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        save(path)
        readable(path)

    def resumes_own_run(self) -> bool:
        """Whether this fit resumes a checkpoint its own checkpoint callback wrote (not another run's)."""
        ckpt, callback = self.trainer.ckpt_path, self.trainer.checkpoint_callback
        if ckpt is None or callback is None or callback.dirpath is None:
            return False
        return Path(ckpt).resolve().parent == Path(callback.dirpath).resolve()

    def on_fit_start(self) -> None:
        """Before the first step (and after a checkpoint is restored, so a resumed run is known)."""
        path = self.export_path()
        taken = path.is_file() or (path.is_dir() and any(path.iterdir()))
        own = not self.hparams.export_dir and self.resumes_own_run()
        if taken and not own and not self.hparams.overwrite_export:
            raise FileExistsError(
                f"the export {path} already holds a model; choose another export_dir, or set overwrite_export=true "
                "to replace it"
            )
