"""Reading and writing host files where a container may have planted symlinks (the workspace, above all).

The container can change what it can write at any moment, so checking a path and
then using it is a race: a directory swapped for a symlink in between leads the
read or write anywhere. Host trees are therefore reached through a
:class:`SafeDirectory`, a directory held open by its file descriptor: children
are created, opened, read and replaced relative to it, no symlink among them is
ever followed, only regular files are read (never a FIFO or device: a FIFO would
block), and runs of zeros written become holes. :func:`open_directory` gets the
first one from a path, following the user's own symlinks only where the
container cannot have made them; :meth:`SafeDirectory.at` opens a path no
container can change.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cci_core.errors import UsageError

#: symlinks followed while opening one path before giving up (the kernel's limit)
MAX_SYMLINK_HOPS = 40

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: the size of the blocks of zeros that :class:`SparseWriter` skips over
_BLOCK = 1 << 16
_ZEROS = bytes(_BLOCK)


class PlantedLinkError(UsageError):
    """A path goes through a symlink that the container may have made."""


class SafeDirectory:
    """An open host directory; every name given to its methods is one entry in it, never followed if a symlink."""

    def __init__(self, fd: int, path: str, *, untrusted: bool = False) -> None:
        self.fd = fd
        self.path = path  #: where it was when opened (for messages: it may have moved since)
        #: whether it lies in an ``untrusted`` directory, as :func:`open_directory` found
        self.untrusted = untrusted

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> SafeDirectory:
        """Directory ``path`` as the kernel finds it, but a symlink at its last name refused (``ELOOP``).

        For a path the container cannot change (the workspace's own path, a directory
        just made); :func:`open_directory` is for one it may have written to.
        """
        return cls(os.open(path, _DIRECTORY_FLAGS), os.fspath(path))

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

    def directory(self, name: str, *, create: bool = False, replace_link: bool = False,
                  mode: int = 0o777) -> SafeDirectory:
        """Subdirectory ``name``, opened without following a symlink there.

        ``create``: make it (``mode`` less the umask) if it is missing. ``replace_link``: a
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
            os.mkdir(name, mode, dir_fd=self.fd)
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

    def beneath(self, relative: str) -> SafeDirectory:
        """Directory ``relative`` below this one (names joined by ``/``; ``''`` is this one, opened again), opened
        a name at a time: a symlink or non-directory anywhere on the way raises :class:`OSError`."""
        current = SafeDirectory(os.open(".", _DIRECTORY_FLAGS, dir_fd=self.fd), self.path, untrusted=self.untrusted)
        for name in relative.split("/") if relative else ():
            parent = current
            try:
                current = parent.directory(name)
            finally:
                parent.close()
        return current

    def lstat_beneath(self, relative: str) -> os.stat_result | None:
        """Entry ``relative`` below this one itself, or None when it is missing or a link or non-directory is on
        the way (then nothing it names is in this tree)."""
        parent, _, name = relative.rpartition("/")
        try:
            _check_name(name)
            with self.beneath(parent) as directory:
                return directory.lstat(name)
        except OSError:
            return None

    def names(self) -> list[str]:
        """The names of its entries, sorted."""
        return sorted(os.listdir(self.fd))

    def open_file(self, name: str) -> BinaryIO:
        """Regular file ``name`` opened for reading; anything else (a symlink, a FIFO...) is an error, and is never
        followed nor waited on."""
        handle = os.fdopen(self._open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), "rb")
        try:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self.join(name))
            os.set_blocking(handle.fileno(), True)
        except BaseException:
            handle.close()
            raise
        return handle

    def read(self, name: str, limit: int | None = None) -> tuple[bytes, int]:
        """The content (its first ``limit`` bytes, if given) and permission bits of regular file ``name``, opened
        as :meth:`open_file` does."""
        with self.open_file(name) as handle:
            return handle.read(-1 if limit is None else limit), stat.S_IMODE(os.fstat(handle.fileno()).st_mode)

    def write(self, name: str, chunks: Iterable[bytes], mode: int | None = None) -> None:
        """Create or replace file ``name`` with ``chunks``; a symlink (or FIFO, socket, device) in its place is
        replaced, never followed nor opened.

        Runs of zeros become holes (a sparse file stays sparse). ``mode``: set on the
        file (less the umask, as ``cp`` does); without it a new file gets 0666 less the
        umask and an existing one keeps its mode.
        """
        _check_name(name)
        self.remove_link(name, special=True)
        # O_NOFOLLOW: a link put there since makes this fail, never write elsewhere; O_NONBLOCK: nor does a FIFO
        # put there make it wait for a reader
        fd = self._open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            writer = SparseWriter(fd)
            for chunk in chunks:
                writer.write(chunk)
            writer.finish()
            if mode is not None:
                os.fchmod(fd, mode & 0o777 & ~current_umask())
        except OSError as exc:
            raise _with_name(exc, self.join(name)) from None
        finally:
            os.close(fd)

    @contextmanager
    def create(self, name: str, mode: int = 0o666) -> Iterator[SparseWriter]:
        """New regular file ``name`` (``mode`` less the umask) to write; :class:`FileExistsError` when anything
        (a symlink too) is there already."""
        fd = self._open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            yield SparseWriter(fd)
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        """Remove entry ``name`` (not a directory)."""
        _check_name(name)
        try:
            os.unlink(name, dir_fd=self.fd)
        except OSError as exc:
            raise _with_name(exc, self.join(name)) from None

    def symlink(self, name: str, target: str, *, replace: bool = True) -> None:
        """Make ``name`` a symlink to ``target``, replacing a file or symlink there (a directory is kept: error).

        Without ``replace`` anything there is kept: :class:`FileExistsError`.
        """
        _check_name(name)
        info = self.lstat(name) if replace else None
        try:
            if info is not None and not stat.S_ISDIR(info.st_mode):
                os.unlink(name, dir_fd=self.fd)
            os.symlink(target, name, dir_fd=self.fd)
        except OSError as exc:
            raise _with_name(exc, self.join(name)) from None

    @contextmanager
    def handle(self, name: str) -> Iterator[int]:
        """An ``O_PATH`` descriptor of entry ``name`` itself (a symlink is not followed): :func:`os.fstat` it and
        change it with :func:`chmod_handle`, never by a path the container could swap meanwhile."""
        fd = self._open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open(self, name: str, flags: int, mode: int = 0o666) -> int:
        _check_name(name)
        try:
            return os.open(name, flags, mode, dir_fd=self.fd)
        except OSError as exc:
            raise _with_name(exc, self.join(name)) from None


class SparseWriter:
    """A regular file written from its start: blocks of zeros are skipped over, so that they become holes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0  #: bytes written so far, holes included

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        for start in range(0, len(data), _BLOCK):
            block = data[start:start + _BLOCK]
            if block == _ZEROS[:len(block)]:
                os.lseek(self.fd, len(block), os.SEEK_CUR)
                continue
            view = memoryview(block)
            while view:
                view = view[os.write(self.fd, view):]
        self.size += len(data)

    def finish(self) -> None:
        """End the file where the writes ended (a hole at the end has no blocks, but it has a length)."""
        os.ftruncate(self.fd, self.size)


def chmod_handle(fd: int, mode: int) -> None:
    """Set ``mode`` on the file an ``O_PATH`` descriptor (:meth:`SafeDirectory.handle`) refers to; not for a
    symlink's descriptor (the change would reach its target)."""
    os.chmod(f"/proc/self/fd/{fd}", mode)


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


def only_mine(path: str | Path) -> bool:
    """Whether no one but this user can have put the file ``path`` there: a regular file (not a link) of the
    user, in a directory of the user that neither group nor others may write to. For cached downloads and
    builds that are used again without being verified again."""
    try:
        file, directory = os.lstat(path), os.stat(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    mine = os.geteuid()
    return stat.S_ISREG(file.st_mode) and file.st_uid == directory.st_uid == mine \
        and not (file.st_mode | directory.st_mode) & 0o022


def leads_inside(path: str | Path, directory: str | Path) -> bool:
    """Whether ``path``, all symlinks followed, is ``directory`` or lies inside it."""
    inside = os.path.realpath(directory)
    return os.path.commonpath([inside, os.path.realpath(path)]) == inside


def current_umask() -> int:
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
