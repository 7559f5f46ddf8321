"""``cci file push`` and ``cci file pull``: copy files and directories between the host and a container."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

import click

from cci_core.cli.container_cmd import check_absolute, driver_of
from cci_core.cli.state import get_state, warn
from cci_core.errors import CciError, NotFoundError, UsageError
from cci_core.host_files import open_directory, open_parent

if TYPE_CHECKING:
    from cci_core.driver import Driver


class Remote(NamedTuple):
    """A ``CONTAINER:PATH`` argument."""

    container: str
    path: str


def parse_remote(value: str, driver: Driver) -> Remote:
    """Split ``CONTAINER:PATH`` strictly: a container name ``driver`` accepts, a colon, an absolute path."""
    name, colon, path = value.partition(":")
    if not colon or driver.check_container_name(name) is not None:
        raise UsageError(f"{value!r} is not CONTAINER:PATH", hint="e.g. my-container:/workspace/file.txt")
    return Remote(name, check_absolute(path, f"the path in {value!r}"))


def _into(directory: str, name: str, what: str) -> str:
    """``name`` inside ``directory``; a :class:`UsageError` when the source has no name (``/``)."""
    if not name:
        raise UsageError(f"{what} has no name to copy it under", hint="give the full destination path")
    return os.path.join(directory, name)


@click.group()
def file() -> None:
    """Copy files and directories between the host and a container, running or stopped.

    The container side is written CONTAINER:PATH, with PATH absolute.
    """


@file.command()
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="CONTAINER:DEST")
@click.option("-r", "--recursive", is_flag=True, help="Copy a directory and everything in it.")
@click.option("--uid", type=click.IntRange(min=0), default=0, show_default=True,
              help="Owner uid of what is written in the container.")
@click.option("--gid", type=click.IntRange(min=0), default=0, show_default=True,
              help="Owner gid of what is written in the container.")
@click.pass_context
def push(ctx: click.Context, source: str, destination: str, recursive: bool, uid: int, gid: int) -> None:
    """Copy host file SRC (a directory with -r) to DEST in CONTAINER.

    DEST ending in / means "into that directory", under SRC's name;
    otherwise DEST is the copy's own path. Its parent directory must exist in
    the container. A file keeps its mode bits; with -r, DEST becomes a copy of
    SRC's content (merged into DEST if it exists), symlinks are copied as
    links and only regular files are read. Everything written is owned by
    --uid/--gid. A SRC that is, or goes through, a symlink inside the
    workspace is refused: the container may have made it.
    """
    remote = parse_remote(destination, driver_of(ctx))
    workspace = get_state(ctx).workspace
    target = remote.path
    if target.endswith("/"):
        target = _into(target, Path(os.path.abspath(source)).name, source)
    try:
        # a symlink inside the workspace is not followed: the container may have made it, to have your
        # ~/.ssh/id_rsa pushed in, say
        with open_parent(source, untrusted=[workspace], follow=True) as (parent, name):
            info = parent.lstat(name)
            if info is None:
                raise NotFoundError(f"{source} does not exist")
            if stat.S_ISDIR(info.st_mode) and not recursive:
                raise UsageError(f"{source} is a directory", hint="use -r to copy a directory")
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                raise UsageError(f"{source} is neither a regular file nor a directory")
            container = driver_of(ctx).get(remote.container)
            if stat.S_ISDIR(info.st_mode):
                container.push_tree(Path(parent.join(name)), target, uid=uid, gid=gid, untrusted=[workspace])
                return
            with parent.open_file(name) as handle:  # streamed: a file is never read whole into memory
                status = os.fstat(handle.fileno())
                container.push_stream(target, handle, status.st_size, mode=stat.S_IMODE(status.st_mode), uid=uid,
                                      gid=gid)
    except FileNotFoundError:
        raise NotFoundError(f"{source} does not exist") from None
    except OSError as exc:
        raise CciError(f"cannot read {exc.filename or source}: {exc.strerror}") from None


def _pull_target(destination: str, source: Remote, workspace: Path, recursive: bool) -> Path:
    """Where a pull writes: DEST, or SRC's name inside DEST when DEST is a directory or ends with /.

    A DEST that is a symlink is refused (with a trailing / it is a directory on the
    way), and so is one going through a symlink inside the workspace: the container
    can make those, to lead the copy to ``~/.ssh``, say. This check is for a clear
    message; the writes themselves never follow such a link, even one made later.
    """
    path = Path(os.path.abspath(destination))
    try:
        into = destination.endswith(os.sep)
        if not into:
            try:
                with open_parent(path, untrusted=[workspace]) as (parent, name):
                    info, link = parent.lstat(name), parent.readlink(name)
            except FileNotFoundError:  # made by the copy
                return path
            if link is not None:
                raise UsageError(f"{destination} is a symlink: {path} -> {link}", hint="name where it leads instead")
            into = info is not None and stat.S_ISDIR(info.st_mode)
        if not into:
            return path
        target = Path(_into(str(path), PurePosixPath(source.path).name, f"{source.container}:{source.path}"))
        if not recursive:
            try:
                with open_directory(path, untrusted=[workspace]) as directory:
                    found = directory.lstat(target.name)
            except FileNotFoundError:
                found = None
            if found is not None and stat.S_ISDIR(found.st_mode):
                raise UsageError(f"{target} is a directory", hint="name the file to write, or use -r for a directory")
        return target
    except OSError as exc:
        raise CciError(f"cannot write {exc.filename or destination}: {exc.strerror}") from None


@file.command()
@click.argument("source", metavar="CONTAINER:SRC")
@click.argument("destination", metavar="DEST")
@click.option("-r", "--recursive", is_flag=True, help="Copy a directory and everything in it.")
@click.pass_context
def pull(ctx: click.Context, source: str, destination: str, recursive: bool) -> None:
    """Copy file SRC (a directory with -r) from CONTAINER to host path DEST.

    If DEST is an existing directory or ends with /, the copy goes into it
    under SRC's name; otherwise DEST is the copy's own path. Missing parent
    directories are created. With -r, a directory that exists already is
    merged into, files keep their mode bits (less the umask, as cp does),
    symlinks stay symlinks, and FIFOs, sockets and devices are skipped with a
    warning. A single pulled file gets the default mode (umask); a symlink is
    followed, and anything but a regular file is refused. No symlink is ever
    followed on the host inside the workspace, nor at or below where the copy
    is written, even one the container makes while the copy runs: a DEST that
    is a symlink, or goes through one inside the workspace, is refused, and a
    symlink found where a file or directory is written is replaced.
    """
    remote = parse_remote(source, driver_of(ctx))
    workspace = get_state(ctx).workspace
    target = _pull_target(destination, remote, workspace, recursive)
    container = driver_of(ctx).get(remote.container)

    def skipped(path: str, kind: str) -> None:
        warn(f"skipped {remote.container}:{path}: a {kind} (only regular files, directories and symlinks are copied)")

    try:
        if recursive:
            container.pull_tree(remote.path, target, untrusted=[workspace], on_skip=skipped)
        else:
            container.pull_file_to(remote.path, target, untrusted=[workspace])
    except OSError as exc:
        raise CciError(f"cannot write {exc.filename or target}: {exc.strerror}") from None
