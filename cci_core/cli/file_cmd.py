"""``cci file push`` and ``cci file pull``: copy files and directories between the host and a container."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import click

from cci_core.cli.container_cmd import check_absolute, driver_of, existing_path, is_valid_name
from cci_core.cli.state import get_state
from cci_core.errors import BackendError, CciError, UsageError
from cci_core.host_files import leads_inside, write_no_follow


class Remote(NamedTuple):
    """A ``CONTAINER:PATH`` argument."""

    container: str
    path: str


def parse_remote(value: str) -> Remote:
    """Split ``CONTAINER:PATH`` strictly: a valid container name, a colon, an absolute path."""
    name, colon, path = value.partition(":")
    if not colon or not is_valid_name(name):
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
    SRC's content (merged into DEST if it exists). Everything written is
    owned by --uid/--gid.
    """
    remote = parse_remote(destination)
    local = existing_path(source)
    target = remote.path
    if target.endswith("/"):
        target = _into(target, Path(os.path.abspath(source)).name, source)
    if local.is_dir() and not recursive:
        raise UsageError(f"{source} is a directory", hint="use -r to copy a directory")
    if not (local.is_dir() or local.is_file()):
        raise UsageError(f"{source} is neither a regular file nor a directory")
    container = driver_of(ctx).get(remote.container)
    if local.is_dir():
        container.push_tree(local, target, uid=uid, gid=gid)
        return
    try:
        data, mode = local.read_bytes(), local.stat().st_mode & 0o7777
    except OSError as exc:
        raise CciError(f"cannot read {source}: {exc.strerror}") from None
    container.push_file(target, data, mode=mode, uid=uid, gid=gid)


def _refuse_planted_links(destination: Path, workspace: Path) -> None:
    """Refuse a DEST that is a symlink, or that goes through one inside the workspace: the container
    can make those, and lead the copy anywhere (``~/.ssh``, say)."""
    path = Path(os.path.abspath(destination))
    for candidate in (path, *path.parents):
        if candidate.is_symlink() and (candidate == path or leads_inside(candidate.parent, workspace)):
            raise UsageError(f"{destination} {'is' if candidate == path else 'goes through'} a symlink: "
                             f"{candidate} -> {os.readlink(candidate)}", hint="name where it leads instead")


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
    merged into, files keep their mode bits (less the umask, as cp does) and
    symlinks stay symlinks. A single pulled file gets the default mode
    (umask); a symlink is followed. A DEST that is a symlink, or goes through
    one inside the workspace, is refused, and a symlink found where a file or
    directory is written is replaced, never followed: the container may have
    put it there.
    """
    remote = parse_remote(source)
    target = Path(destination)
    _refuse_planted_links(target, get_state(ctx).workspace)
    if destination.endswith(os.sep) or target.is_dir():
        target = Path(_into(destination, PurePosixPath(remote.path).name, source))
    if target.is_dir() and not recursive:
        raise UsageError(f"{target} is a directory", hint="name the file to write, or use -r for a directory")
    container = driver_of(ctx).get(remote.container)
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if recursive:
            container.pull_tree(remote.path, target)
        else:
            write_no_follow(target, container.pull_file(remote.path))
    except OSError as exc:
        raise CciError(f"cannot write {exc.filename or target}: {exc.strerror}") from None
    if not existed and not target.exists():  # the driver reported success but wrote nothing
        raise BackendError(f"copying {source} to {target} wrote nothing",
                           hint="the container driver did not copy the directory; this is a bug in it")
