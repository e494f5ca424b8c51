"""The one exception type for user mistakes.

A ``UserError`` is something the user can fix (a bad config value, a damaged or missing file, an output
path that cannot be written); its message names the file, key or field and what to do. The CLI prints it as
one ``error:`` line (``--verbose`` adds the traceback); the Ray driver unwraps it from Ray's wrappers.

Why a ``ValueError`` subclass: the code base reported user mistakes as ``ValueError`` before this type
existed, and every ``except ValueError`` keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path


class UserError(ValueError):
    """A mistake in the user's input or environment; the message says which file/key and what to do."""


def check_writable_file(path: str | Path, what: str) -> Path:
    """Fail now, not after a long run, when ``path`` cannot be written as a file (``what`` names the flag)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{what} {path}: is a folder; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path}: the folder {parent} does not exist (create it first)")
    if not _can_write(parent):
        raise UserError(f"{what} {path}: the folder {parent} is not writable")
    return path


def check_output_folder(path: str | Path, what: str) -> Path:
    """``path`` is, or can be created as, a folder: no file in the way at it or any parent."""
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{what} {path}: {p} is a file, not a folder")
            if not _can_write(p):
                raise UserError(f"{what} {path}: {p} is not writable")
            return path
    return path


def _can_write(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)
