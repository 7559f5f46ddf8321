"""Writing host files where a container may have planted symlinks (the workspace, above all)."""

from __future__ import annotations

import os
from pathlib import Path


def remove_link(path: Path) -> None:
    """Remove ``path`` if it is a symlink (so that what comes next makes a real file or directory there)."""
    if path.is_symlink():
        path.unlink()


def leads_inside(path: str | Path, directory: str | Path) -> bool:
    """Whether ``path``, all symlinks followed, is ``directory`` or lies inside it."""
    inside = os.path.realpath(directory)
    return os.path.commonpath([inside, os.path.realpath(path)]) == inside


def write_no_follow(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``path``, replacing a symlink in its place instead of writing through it.

    ``mode``: set on the file (less the umask, as ``cp`` does); without it a new file
    gets 0666 less the umask and an existing one keeps its mode.
    """
    remove_link(path)
    # O_NOFOLLOW: a link put there after the check makes this fail, not write elsewhere
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        if mode is not None:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(handle.fileno(), mode & 0o777 & ~umask)
