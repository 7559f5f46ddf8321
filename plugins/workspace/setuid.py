"""Clearing setuid and setgid bits the container set on workspace files.

The host user's uid is the container user's, so a setuid file made inside
belongs to the user on the host: anyone who can reach the workspace could run
it as them. Each such regular file is re-checked through an ``O_PATH``
descriptor (never a path the container could swap) and changed through
``/proc/self/fd``.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from cci_builtin_plugins.workspace.walk import walk
from cci_core.host_files import SafeDirectory, chmod_handle

_PRIVILEGE_BITS = stat.S_ISUID | stat.S_ISGID


class SetuidReport(NamedTuple):
    """What :func:`clear_setuid` did: files cleared, files it could not clear, directories not walked."""

    cleared: list[str]
    left: list[str]
    skipped: list[str]


def clear_setuid(workspace: str | os.PathLike[str], owner: int | None = None) -> SetuidReport:
    """Clear setuid/setgid on every regular file under ``workspace`` (one filesystem, no link followed).

    Files of other owners than ``owner`` (default: this process's user) cannot be
    changed and are listed in ``left``; so are files that changed under the walk.
    """
    owner = os.geteuid() if owner is None else owner
    report = SetuidReport([], [], [])
    try:
        with SafeDirectory.at(workspace) as root:
            device = os.fstat(root.fd).st_dev
            for entry in walk(root, device=device, skipped=report.skipped):
                mode = entry.stat.st_mode
                if stat.S_ISREG(mode) and mode & _PRIVILEGE_BITS:
                    cleared = entry.stat.st_uid == owner and _clear(entry.name, entry.directory, owner)
                    (report.cleared if cleared else report.left).append(entry.path)
    except OSError:
        pass  # the workspace is gone: nothing to clear
    return report


def _clear(name: str, directory: SafeDirectory, owner: int) -> bool:
    try:
        with directory.handle(name) as handle:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != owner:
                return False
            if info.st_mode & _PRIVILEGE_BITS:
                chmod_handle(handle, stat.S_IMODE(info.st_mode) & ~_PRIVILEGE_BITS)
            return True
    except OSError:
        return False
