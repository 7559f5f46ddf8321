"""Which host directories may be mounted read-write into a container (the workspace, ``--storage``), and whether a
saved container's mounts still lead where cci resolved them before it starts again."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cci_core.errors import UsageError
from cci_core.layout import state_dir

if TYPE_CHECKING:
    from cci_core.context import Mount
    from cci_core.tool import ToolAdapter

#: directories of your home that hold credentials, or files your machine trusts and runs (``~/.local/bin``,
#: ``~/.config/autostart``, systemd user units): never a workspace, nor inside one; the directories of the
#: tools' credential files (``~/.claude``...) are added by :func:`tool_directories`
SENSITIVE_IN_HOME = (
    # keys, tokens and browser sessions
    ".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".password-store", ".pki", ".terraform.d", ".mozilla",
    # settings, programs and init scripts your machine runs: on PATH, at login, by your tools
    ".config", ".local", "bin", ".cargo", ".rustup", ".npm", ".nvm", ".pyenv", ".gradle", ".m2", ".vscode",
    ".vscode-server", ".ipython",
)


def tool_directories(tools: Iterable[type[ToolAdapter]]) -> tuple[str, ...]:
    """The directories of your home that hold the tools' credential files (``~/.claude/...`` -> ``.claude``)."""
    names = []
    for tool in tools:
        for credential in tool.credential_files:
            parts = Path(credential.host_path).parts
            if len(parts) > 2 and parts[0] == "~":  # a file directly in the home guards nothing more
                names.append(parts[1])
    return tuple(dict.fromkeys(names))


def check_mountable(directory: Path, kind: str = "workspace", sensitive: Iterable[str] = ()) -> None:
    """Refuse a workspace (or ``--storage`` directory) that holds your home or cci's own files, or lies in
    one of :data:`SENSITIVE_IN_HOME` (or ``sensitive``: more directories of the home), cci's files or cci's config.

    It is mounted read-write: the agent could read all of your home (``~/.ssh``
    too), plant keys or programs your machine trusts, and rewrite cci's config or
    saved sessions, which no trust check guards.
    """
    from cci_core.config import user_config_file

    home = Path.home().resolve()
    guarded = [("your home directory", home, False),
               ("cci's files", state_dir(home).resolve(), True),
               ("your cci config", user_config_file().parent.resolve(), True)]
    guarded += [(f"~/{name}", _in_home(home, name), True) for name in (*SENSITIVE_IN_HOME, *sensitive)]
    for what, path, inside_too in guarded:
        holds = directory == path or directory in path.parents
        if holds or (inside_too and path in directory.parents):
            raise UsageError(f"{kind} {directory} {'holds' if holds else 'is in'} {what} ({path}): the container "
                             "would get it read-write", hint=f"use a project directory as the {kind}")


def _in_home(home: Path, name: str) -> Path:
    """``home / name`` resolved (``home`` is): one ``lstat`` rather than a walk from the root, unless it is a link."""
    path = home / name
    if "/" in name or name in (".", ".."):
        return path.resolve()
    try:
        if not stat.S_ISLNK(os.lstat(path).st_mode):
            return path
    except OSError:
        return path  # nothing there: as resolve() would say
    return path.resolve()


def check_storage_layout(workspace: Path, storage: Sequence[Path]) -> None:
    """Refuse a ``--storage`` directory (all paths resolved) that lies in the workspace or in another one, or
    holds the workspace or another one.

    Whatever lies inside a mounted directory, the container can replace with a
    link; Incus follows links when it mounts a device's source, so the next start
    would mount whatever the link names (``~/.ssh``, say) at ``/storage/<name>``.
    """
    hint = "use a directory outside the workspace and the other storage directories"
    for index, path in enumerate(storage):
        others = [("the workspace", workspace)] + [("another storage directory", other)
                                                   for other in storage[index + 1:]]
        for what, other in others:
            if path == other or other in path.parents:
                raise UsageError(f"storage directory {path} is in {what} ({other}): the container could swap it "
                                 "for a link to any of your directories", hint=hint)
            if path in other.parents:
                raise UsageError(f"storage directory {path} holds {what} ({other}): the container could swap "
                                 "what it mounts for a link to any of your directories", hint=hint)


def is_guarded_device(device: str) -> bool:
    """Whether a mount is one the user names (the workspace, a ``--storage`` directory), held to
    :func:`check_mountable`."""
    return device == "workspace" or device.startswith("storage")


def check_sources(mounts: Sequence[Mount], container: str, other_workspaces: Iterable[Path] = (),
                  sensitive: Iterable[str] = ()) -> None:
    """Before a container starts: refuse if a mount's host source is no longer what cci resolved when it made the
    device (it is missing, a link, or has a link on its path), the workspace or a storage directory no
    longer passes :func:`check_mountable`, or a storage directory lies in one of ``other_workspaces`` (those
    of the other sessions). ``sensitive``: as for :func:`check_mountable`.

    Incus follows links when it mounts a source: a directory the container could
    reach (in the workspace, in another session's) swapped for a link would
    mount any directory of the user's.
    """
    others, sensitive = tuple(other_workspaces), tuple(sensitive)
    for mount in mounts:
        if mount.device.startswith("storage"):
            for workspace in others:
                if mount.source == workspace or workspace in mount.source.parents:
                    raise UsageError(f"{container}: its storage directory {mount.source} is in the workspace of "
                                     f"another session ({workspace}), whose agent could swap it for a link; it was "
                                     "not started", hint="use a directory outside every session's workspace")
        source = mount.source
        try:
            real, info = source.resolve(strict=True), source.lstat()
        except OSError as exc:
            raise UsageError(f"{container}: the source {source} of its mount {mount.path} is gone "
                             f"({exc.strerror}); it was not started",
                             hint=f"restore {source}, or delete the container with 'cci container delete "
                                  f"{container}'") from None
        if real != source or stat.S_ISLNK(info.st_mode) or (is_guarded_device(mount.device)
                                                          and not stat.S_ISDIR(info.st_mode)):
            now = f"it leads to {real}" if real != source else "it is not a directory"
            raise UsageError(f"{container}: the source {source} of its mount {mount.path} is no longer what cci "
                             f"mounted ({now}); it was not started",
                             hint=f"check {source} for links put there from a container; put the directory back, "
                                  f"or delete the container with 'cci container delete {container}'")
        if is_guarded_device(mount.device):
            check_mountable(source, "workspace" if mount.device == "workspace" else "storage directory", sensitive)
