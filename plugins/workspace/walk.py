"""Reading a workspace the container writes to, safely: directory descriptors, no link ever followed.

Everything in the workspace is the container's to change at any moment: every
component is opened relative to its parent's descriptor with ``O_NOFOLLOW``,
only regular files are ever opened for reading (``O_NONBLOCK`` so that a file
swapped for a FIFO cannot block, then checked again on the open descriptor),
and reads are bounded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: deeper directories are not walked (each level holds a descriptor); the walkers say so
MAX_DEPTH = 400


@contextmanager
def opened_dir(path: str, dir_fd: int | None = None) -> Iterator[int]:
    """A descriptor of directory ``path`` (a single name when ``dir_fd`` is given), closed afterwards."""
    descriptor = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


@contextmanager
def opened_beneath(root_fd: int, relative: str) -> Iterator[int]:
    """A descriptor of directory ``relative`` under ``root_fd`` ('' is ``root_fd`` itself), opened one
    component at a time: a link or non-directory anywhere on the way raises :class:`OSError`."""
    fds: list[int] = []
    try:
        current = root_fd
        for part in relative.split("/") if relative else ():
            current = os.open(part, _DIR_FLAGS, dir_fd=current)
            fds.append(current)
        yield current
    finally:
        for descriptor in fds:
            os.close(descriptor)


def lstat_at(root_fd: int, relative: str) -> os.stat_result | None:
    """The ``lstat`` of ``relative`` under ``root_fd``, every parent a real directory, or None if missing.

    A parent that is a link or not a directory counts as missing: nothing the
    path names is inside the workspace.
    """
    parent, _, name = relative.rpartition("/")
    try:
        with opened_beneath(root_fd, parent) as parent_fd:
            return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return None


def read_regular(name: str, dir_fd: int, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of regular file ``name``; None if it is anything else (or is gone)."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(descriptor, min(1 << 16, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(descriptor)


class Entry:
    """One entry met by :func:`walk`: its path relative to the root, the descriptor of its directory, its lstat."""

    __slots__ = ("path", "name", "dir_fd", "stat")

    def __init__(self, path: str, name: str, dir_fd: int, stat_result: os.stat_result) -> None:
        self.path = path
        self.name = name
        self.dir_fd = dir_fd
        self.stat = stat_result


def walk(dir_fd: int, prefix: str = "", *, device: int | None = None, depth: int = 0,
         skipped: list[str] | None = None, prune: Callable[[str], bool] | None = None) -> Iterator[Entry]:
    """Every entry under ``dir_fd``, depth first, links never followed, one filesystem (``device``) only.

    An entry is yielded before its directory's contents (not entered when ``prune(path)``);
    ``dir_fd`` of an entry is valid only until the walk moves on. Directories that
    cannot be opened, or lie deeper than :data:`MAX_DEPTH`, are appended to ``skipped``.
    """
    try:
        with os.scandir(dir_fd) as listing:
            names = [item.name for item in listing]
    except OSError:
        if skipped is not None:
            skipped.append(prefix or ".")
        return
    for name in names:
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        path = f"{prefix}{name}"
        yield Entry(path, name, dir_fd, info)
        if not stat.S_ISDIR(info.st_mode) or (device is not None and info.st_dev != device) or (
                prune is not None and prune(path)):
            continue
        if depth + 1 >= MAX_DEPTH:
            if skipped is not None:
                skipped.append(path)
            continue
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            if skipped is not None:
                skipped.append(path)
            continue
        try:
            yield from walk(child, f"{path}/", device=device, depth=depth + 1, skipped=skipped, prune=prune)
        finally:
            os.close(child)
