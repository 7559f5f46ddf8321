"""Files cci writes into the container user's home (credentials, a tool's settings, the sandbox brief): never where
a link the agent planted leads.

The home is the agent's: root inside, it can put a symlink, a FIFO or a directory at any path cci writes at the
next start, or in place of a directory on the way. Incus's files API and its SFTP follow links (a write opens the
path with ``O_CREAT|O_TRUNC``, and the files API keeps an existing file's mode and owner; a pull opens what a link
names), so a planted ``~/.tool/credentials.json -> /workspace/leak.json`` would put the host's credential into the
host's project. So every write cci makes under the home goes through here:

* every directory from ``/`` down to the file's is looked at without following a link
  (:meth:`~cci_core.driver.Container.file_status`, an SFTP ``lstat``); a missing one below the home is made, the
  container user's, 0700; one that is not a directory (a link, a file) refuses the write;
* an existing file is read (:func:`read_home_file`) only if it is a regular file, and only up to a bound; a link, a
  FIFO, a socket or a device is never followed or opened;
* before the write, whatever is at the file's place is removed (a link itself, never what it leads to; a directory
  refuses the write), and the file is made anew: the container user's, with the mode given (0600).

A refusal is a :class:`HomeFileRefused`, which callers turn into a warning: the agent can keep cci from writing a
file, never make it write elsewhere. What remains is a race, as a look and a write are separate requests: an agent
that re-plants a link in the instant between them still gets the write through it, inside the container as root
(where it can write, and read the file, itself). Nothing it could not do on its own.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from cci_core.errors import CciError, NotFoundError, UsageError
from cci_core.layout import CONTAINER_HOME

if TYPE_CHECKING:
    from cci_core.driver import Container


class HomeFileRefused(CciError):
    """The container's files keep cci from writing (or reading) a file under the home: a link or a file where a
    directory should be, a directory at the file's place, a file over the bound read."""


def home_path(relative: str) -> str:
    """``relative`` under the container user's home; a path leading out of it (absolute, ``..``) is an error."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise CciError(f"{relative!r} is not a path inside the home directory")
    return str(PurePosixPath(CONTAINER_HOME, relative))


def make_home_directories(container: Container, path: str, uid: int) -> None:
    """Check every directory from ``/`` to ``path``'s parent, links not followed; make those missing below the
    home (the container user's, 0700). One that is not a directory is :class:`HomeFileRefused`."""
    _check_directories(container, path, uid)


def read_home_file(container: Container, path: str, limit: int) -> bytes | None:
    """The content of the regular file at ``path`` under the home; None when there is none to keep (nothing there,
    or a link, a FIFO, a socket, a device: never followed or opened). A directory on the way or at ``path``, or a
    file over ``limit`` bytes, is :class:`HomeFileRefused`."""
    if not _check_directories(container, path, None):
        return None
    status = container.file_status(path)
    if status is None or status.kind not in ("file", "directory"):
        return None
    if status.kind == "directory":
        raise HomeFileRefused(f"{_where(container, path)} is a directory", hint="remove it inside the container")
    if status.size > limit:
        raise _too_large(container, path, limit)
    try:
        data = container.pull_file(path)
    except (NotFoundError, UsageError):  # removed or swapped (a FIFO, a directory) since: nothing to keep
        return None
    if len(data) > limit:  # it grew since
        raise _too_large(container, path, limit)
    return data


def write_home_file(container: Container, path: str, data: bytes, *, uid: int, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` under the home as a new file of the container user's (``uid``), ``mode``: the
    directories on the way checked (and made), whatever else is at its place removed. A directory on the way or at
    ``path`` is :class:`HomeFileRefused`."""
    _check_directories(container, path, uid)
    status = container.file_status(path)
    if status is not None and status.kind == "directory":
        raise HomeFileRefused(f"{_where(container, path)} is a directory", hint="remove it inside the container")
    container.remove_file(path)  # a link itself, a FIFO, an agent's file of its own mode and owner
    container.push_file(path, data, mode=mode, uid=uid, gid=uid)


def _check_directories(container: Container, path: str, uid: int | None) -> bool:
    """Whether every directory from ``/`` to ``path``'s parent is one (links not followed); with ``uid``, the
    missing ones below the home are made first (without it, a missing one is False). Anything else there (a link, a
    file; the home or above it missing) is :class:`HomeFileRefused`."""
    home = PurePosixPath(CONTAINER_HOME)
    if home not in PurePosixPath(path).parents:
        raise CciError(f"{path} is not a path inside {home}")
    for directory in reversed(PurePosixPath(path).parents[:-1]):  # from below "/" down
        status = container.file_status(str(directory))
        below_home = home in directory.parents
        if status is None and below_home:
            if uid is None:
                return False
            container.make_directory(str(directory), mode=0o700, uid=uid, gid=uid)
            status = container.file_status(str(directory))  # (a link planted meanwhile is seen here)
        if status is None or status.kind != "directory":
            raise HomeFileRefused(f"{_where(container, str(directory))} is "
                                  f"{'missing' if status is None else f'a {status.kind}'}, not a directory",
                                  hint="remove it inside the container")
    return True


def _too_large(container: Container, path: str, limit: int) -> HomeFileRefused:
    return HomeFileRefused(f"{_where(container, path)} is over {_size(limit)}", hint="remove it inside the container")


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and not limit % (1 << 20) else f"{limit >> 10} KiB"


def _where(container: Container, path: str) -> str:
    return f"{container.name}:{path}"
