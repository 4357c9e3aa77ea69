"""Saving what a trainer trained, once it is done, without overwriting another run's export
(the rules live in :mod:`cse.runs`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cse import runs


class ExportsWhenDone:
    """For trainers that save what they trained at the end: into ``export_dir`` (a folder, or a file
    for single-file exports), by default ``<default_root_dir>/<export_name>``, refusing before
    training a file or a folder that holds files unless ``overwrite_export`` (hyper-parameters of the
    module). A resumed run replaces its own export (the default one, in its folder) without asking.
    The rules live in cse.runs."""

    export_name = "model"

    def export_path(self) -> Path:
        return runs.export_path(self.trainer.default_root_dir, self.hparams.export_dir, self.export_name)

    def export(self, save: Callable[[Path], object]) -> None:
        """``save(path)`` into the export path (its folder made first), readable by others."""
        runs.export(self.export_path(), save)

    def resumes_own_run(self) -> bool:
        """Whether this fit resumes a checkpoint its own checkpoint callback wrote (not another run's)."""
        callback = self.trainer.checkpoint_callback
        return runs.resumes_own_run(self.trainer.ckpt_path, callback.dirpath if callback else None)

    def on_fit_start(self) -> None:
        """Before the first step (and after a checkpoint is restored, so a resumed run is known)."""
        own = not self.hparams.export_dir and self.resumes_own_run()
        runs.check_export(self.export_path(), own, self.hparams.overwrite_export)
