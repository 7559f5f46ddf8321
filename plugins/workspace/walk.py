"""Walking a workspace the container writes to, safely: directory descriptors, no link ever followed.

Everything in the workspace is the container's to change at any moment: every
directory is opened relative to its parent's descriptor, never through a link
(:class:`cci_core.host_files.SafeDirectory`, which also reads only regular
files, bounded, and never waits on a FIFO).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

from cci_core.api import SafeDirectory

#: deeper directories are not walked (each level holds a descriptor); the walkers say so
MAX_DEPTH = 400


class Entry:
    """One entry met by :func:`walk`: its path relative to the root, its directory, its lstat."""

    __slots__ = ("path", "name", "directory", "stat")

    def __init__(self, path: str, name: str, directory: SafeDirectory, stat_result: os.stat_result) -> None:
        self.path = path
        self.name = name
        self.directory = directory
        self.stat = stat_result


def walk(directory: SafeDirectory, prefix: str = "", *, device: int | None = None, depth: int = 0,
         skipped: list[str] | None = None, prune: Callable[[str], bool] | None = None) -> Iterator[Entry]:
    """Every entry under ``directory``, depth first, links never followed, one filesystem (``device``) only.

    An entry is yielded before its directory's contents (not entered when ``prune(path)``);
    ``directory`` of an entry is open only until the walk moves on. Directories that
    cannot be opened, or lie deeper than :data:`MAX_DEPTH`, are appended to ``skipped``.
    """
    try:
        names = directory.names()
    except OSError:
        if skipped is not None:
            skipped.append(prefix or ".")
        return
    for name in names:
        try:
            info = directory.lstat(name)
        except OSError:
            info = None
        if info is None:
            continue  # gone meanwhile
        path = f"{prefix}{name}"
        yield Entry(path, name, directory, info)
        if not stat.S_ISDIR(info.st_mode) or (device is not None and info.st_dev != device) or (
                prune is not None and prune(path)):
            continue
        if depth + 1 >= MAX_DEPTH:
            if skipped is not None:
                skipped.append(path)
            continue
        try:
            child = directory.directory(name)
        except OSError:
            if skipped is not None:
                skipped.append(path)
            continue
        with child:
            yield from walk(child, f"{path}/", device=device, depth=depth + 1, skipped=skipped, prune=prune)
