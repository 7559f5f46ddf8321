"""Clearing setuid and setgid bits the container set on workspace files.

The host user's uid is the container user's, so a setuid file made inside
belongs to the user on the host: anyone who can reach the workspace could run
it as them. Each such regular file is re-checked through an ``O_PATH``
descriptor (never a path the container could swap) and changed through
``/proc/self/fd``. The walk is :func:`.sweep.sweep`'s.
"""

from __future__ import annotations

import os
import stat

from cci_builtin_plugins.workspace.walk import Entry
from cci_core.api import chmod_handle

_PRIVILEGE_BITS = stat.S_ISUID | stat.S_ISGID


def is_privileged(entry: Entry) -> bool:
    """Whether ``entry`` is a setuid or setgid regular file (a setgid directory is how shared groups work)."""
    return stat.S_ISREG(entry.stat.st_mode) and bool(entry.stat.st_mode & _PRIVILEGE_BITS)


def clear_privileges(entry: Entry, owner: int) -> bool:
    """Clear the setuid/setgid bits of ``entry`` if it is still a regular file of ``owner``; whether it could."""
    if entry.stat.st_uid != owner:
        return False
    try:
        with entry.directory.handle(entry.name) as handle:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != owner:
                return False
            if info.st_mode & _PRIVILEGE_BITS:
                chmod_handle(handle, stat.S_IMODE(info.st_mode) & ~_PRIVILEGE_BITS)
            return True
    except OSError:
        return False
