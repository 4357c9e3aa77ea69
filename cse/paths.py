"""Paths in configs: relative to the current folder, or else to the project's source checkout."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The folder holding ``cse/``: a source checkout's root (where ``checkpoints/`` and ``configs/`` live)."""


def project_path(path: str | os.PathLike) -> Path:
    """``path`` itself if it exists or is absolute; else the same relative path under the project
    root if it exists there (so shipped checkpoints are found from any working folder); else
    ``path`` unchanged, for the caller's error to name."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    in_project = PROJECT_ROOT / given
    return in_project if in_project.exists() else given


def where(path: str | os.PathLike) -> str:
    """How a missing path was looked for, for error messages."""
    given = Path(path).expanduser()
    if given.is_absolute():
        return str(given)
    folders = dict.fromkeys([str(Path.cwd()), str(PROJECT_ROOT)])
    return f"{given} (looked in {' and '.join(folders)})"
