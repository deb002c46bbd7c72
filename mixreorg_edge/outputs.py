"""Output paths, checked before any work: one clear error up front instead of a traceback after minutes of
compute (an unwritable folder, a folder where a file is asked for, a file where a folder is)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def _check_writable(folder: Path, option: str, path: Path) -> None:
    """ValueError unless files can be created in `folder` (or, where it does not exist yet, in its nearest existing
    ancestor, where it would be made). Probed by creating a file: permission bits do not tell root or a read-only
    mount the truth."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"{option} {path}: cannot write in {existing} ({error.strerror or error})") from None


def check_output_file(path: Path, option: str) -> None:
    """`path` can be written as a file (its folder made if needed)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    _check_writable(path.parent, option, path)


def check_output_folder(path: Path, option: str) -> None:
    """`path` is, or can be made as, a folder to write in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file; give a folder")
    _check_writable(path, option, path)
