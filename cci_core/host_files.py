"""Writing host files where a container may have planted symlinks (the workspace, above all).

The container can change what it can write at any moment, so checking a path and
then writing to it is a race: a directory swapped for a symlink in between leads
the write anywhere. Writes therefore go through a :class:`SafeDirectory`, a
directory held open by its file descriptor: children are created, opened and
replaced relative to it, and no symlink among them is ever followed.
:func:`open_directory` gets the first one from a path, following the user's own
symlinks only where the container cannot have made them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cci_core.errors import UsageError

#: symlinks followed while opening one path before giving up (the kernel's limit)
MAX_SYMLINK_HOPS = 40

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PlantedLinkError(UsageError):
    """A path goes through a symlink that the container may have made."""


class SafeDirectory:
    """An open host directory; every name given to its methods is one entry in it, never followed if a symlink."""

    def __init__(self, fd: int, path: str, *, untrusted: bool = False) -> None:
        self.fd = fd
        self.path = path  #: where it was when opened (for messages: it may have moved since)
        #: whether it lies in an ``untrusted`` directory, as :func:`open_directory` found
        self.untrusted = untrusted

    def __enter__(self) -> SafeDirectory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"SafeDirectory({self.path!r})"

    def join(self, name: str) -> str:
        """The path of entry ``name`` (for messages)."""
        return os.path.join(self.path, name)

    def lstat(self, name: str) -> os.stat_result | None:
        """Entry ``name`` itself (a symlink is not followed), or None when there is none."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def readlink(self, name: str) -> str | None:
        """The target of symlink ``name``, or None when ``name`` is not a symlink (or not there)."""
        try:
            return os.readlink(name, dir_fd=self.fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return None
            raise _with_name(exc, self.join(name)) from None

    def remove_link(self, name: str, *, special: bool = False) -> None:
        """Remove entry ``name`` if it is a symlink (so that what comes next makes a real file or directory).

        ``special``: a FIFO, socket or device there is removed too.
        """
        info = self.lstat(name)
        if info is not None and (stat.S_ISLNK(info.st_mode) or special and not (
                stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode))):
            try:
                os.unlink(name, dir_fd=self.fd)
            except FileNotFoundError:
                pass  # gone meanwhile: what comes next makes its entry
            except OSError as exc:
                raise _with_name(exc, self.join(name)) from None

    def directory(self, name: str, *, create: bool = False, replace_link: bool = False) -> SafeDirectory:
        """Subdirectory ``name``, opened without following a symlink there.

        ``create``: make it (0777 less the umask) if it is missing. ``replace_link``: a
        symlink in its place is removed first; without it a symlink fails (``ELOOP``).
        """
        if replace_link:
            self.remove_link(name)
        try:
            return self._open_directory(name)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(name, 0o777, dir_fd=self.fd)
        except FileExistsError:
            pass  # made meanwhile: opened (or refused) below like any other
        return self._open_directory(name)

    def _open_directory(self, name: str) -> SafeDirectory:
        _check_name(name)
        try:
            return SafeDirectory(os.open(name, _DIRECTORY_FLAGS, dir_fd=self.fd), self.join(name),
                                 untrusted=self.untrusted)
        except OSError as exc:
            raise _with_name(exc, self.join(name)) from None

    def names(self) -> list[str]:
        """The names of its entries, sorted."""
        return sorted(os.listdir(self.fd))

    def read(self, name: str) -> tuple[bytes, int]:
        """The content and permission bits of regular file ``name``; anything else (a symlink, a FIFO...) is an
        error, and is never followed nor waited on."""
        _check_name(name)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            raise _with_name(exc, self.join(name)) from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self.join(name))
            os.set_blocking(fd, True)
            return handle.read(), stat.S_IMODE(info.st_mode)

    def write(self, name: str, chunks: Iterable[bytes], mode: int | None = None) -> None:
        """Create or replace file ``name`` with ``chunks``; a symlink (or FIFO, socket, device) in its place is
        replaced, never followed nor opened.

        Runs of zeros become holes (a sparse file stays sparse). ``mode``: set on the
        file (less the umask, as ``cp`` does); without it a new file gets 0666 less the
        umask and an existing one keeps its mode.
        """
        _check_name(name)
        self.remove_link(name, special=True)
        try:
            # O_NOFOLLOW: a link put there since makes this fail, never write elsewhere; O_NONBLOCK: nor
            # does a FIFO put there make it wait for a reader
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o666, dir_fd=self.fd)
        except OSError as exc:
            raise _with_name(exc, self.join(name)) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            size = 0
            for chunk in chunks:
                size += len(chunk)
                if chunk.count(0) == len(chunk):
                    os.lseek(fd, len(chunk), os.SEEK_CUR)
                    continue
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            os.ftruncate(fd, size)  # a hole at the end has no blocks, but it has a length
            if mode is not None:
                os.fchmod(fd, mode & 0o777 & ~_umask())
        except OSError as exc:
            raise _with_name(exc, self.join(name)) from None
        finally:
            os.close(fd)

    def symlink(self, name: str, target: str) -> None:
        """Make ``name`` a symlink to ``target``, replacing a file or symlink there (a directory is kept: error)."""
        _check_name(name)
        info = self.lstat(name)
        try:
            if info is not None and not stat.S_ISDIR(info.st_mode):
                os.unlink(name, dir_fd=self.fd)
            os.symlink(target, name, dir_fd=self.fd)
        except OSError as exc:
            raise _with_name(exc, self.join(name)) from None


def open_directory(path: str | Path, *, untrusted: Sequence[str | Path] = (), create: bool = False) -> SafeDirectory:
    """Open directory ``path``, component by component, never following a symlink the container may have made.

    A symlink is followed only where its directory lies outside every ``untrusted``
    directory (the user's own links, e.g. in their home); inside one it raises
    :class:`PlantedLinkError`. ``create``: missing directories are made.
    """
    roots = set()
    for root in untrusted:
        try:
            info = os.stat(root)
        except OSError:
            continue
        roots.add((info.st_dev, info.st_ino))
    absolute = os.path.abspath(path)
    pending = absolute.split("/")
    stack = [(SafeDirectory(os.open("/", _DIRECTORY_FLAGS), "/"), _identity(os.stat("/")) in roots)]
    hops = 0
    try:
        while pending:
            name = pending.pop(0)
            current, inside = stack[-1]
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    stack.pop()[0].close()
                continue
            try:
                child = current.directory(name, create=create)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                hops += 1
                target = current.readlink(name)
                if target is None:
                    info = current.lstat(name)
                    if (info is None or stat.S_ISDIR(info.st_mode)) and hops <= MAX_SYMLINK_HOPS:
                        pending.insert(0, name)  # changed since the open (swapped, or gone): tried again
                        continue
                    raise exc from None
                if inside:
                    raise PlantedLinkError(f"{absolute} goes through a symlink: {current.join(name)} -> {target}",
                                           hint="name where it leads instead") from None
                if hops > MAX_SYMLINK_HOPS:
                    raise _with_name(OSError(errno.ELOOP, os.strerror(errno.ELOOP)), absolute) from None
                pending[:0] = target.split("/")
                if target.startswith("/"):
                    while len(stack) > 1:
                        stack.pop()[0].close()
                continue
            stack.append((child, inside or _identity(os.fstat(child.fd)) in roots))
        directory, inside = stack.pop()
        directory.path, directory.untrusted = absolute, inside
        return directory
    finally:
        for directory, _inside in stack:
            directory.close()


@contextmanager
def open_parent(path: str | Path, *, untrusted: Sequence[str | Path] = (), create: bool = False,
                follow: bool = False) -> Iterator[tuple[SafeDirectory, str]]:
    """The directory holding ``path`` (opened as :func:`open_directory` does) and ``path``'s last name.

    ``follow``: a symlink at the last name is followed too, under the same rule (only
    outside ``untrusted`` directories; inside one it raises :class:`PlantedLinkError`).
    """
    absolute = os.path.abspath(path)
    for _hop in range(MAX_SYMLINK_HOPS + 1):
        parent, name = os.path.split(absolute)
        if not name:
            raise UsageError(f"{path} has no name", hint="give a path below /")
        with open_directory(parent, untrusted=untrusted, create=create) as directory:
            target = directory.readlink(name) if follow else None
            if target is None:
                yield directory, name
                return
            if directory.untrusted:
                raise PlantedLinkError(f"{path} is a symlink inside the workspace: {directory.join(name)} -> {target}",
                                       hint="name where it leads instead")
            absolute = os.path.join(parent, target)
    raise _with_name(OSError(errno.ELOOP, os.strerror(errno.ELOOP)), str(path))


def leads_inside(path: str | Path, directory: str | Path) -> bool:
    """Whether ``path``, all symlinks followed, is ``directory`` or lies inside it."""
    inside = os.path.realpath(directory)
    return os.path.commonpath([inside, os.path.realpath(path)]) == inside


def _umask() -> int:
    """The process's umask, read without changing it (setting it, even back, races other threads' creations)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise OSError(errno.EINVAL, "not a single file name", name)


def _with_name(exc: OSError, path: str) -> OSError:
    """``exc`` naming ``path`` (an error from a call relative to a directory names only the entry)."""
    if exc.errno == errno.ELOOP:
        return OSError(exc.errno, "is a symlink (not followed)", path)
    return OSError(exc.errno, exc.strerror or str(exc), path)
