"""The one walk of the workspace when a session ends: setuid bits cleared, nested git directories checked.

Every directory is opened from its parent's descriptor, no link followed, on the
workspace's filesystem only (:mod:`.walk`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from cci_builtin_plugins.workspace.nested_git import changed_since, is_nested_git
from cci_builtin_plugins.workspace.setuid import clear_privileges, is_privileged
from cci_builtin_plugins.workspace.walk import walk
from cci_core.host_files import SafeDirectory


class SweepReport(NamedTuple):
    """What :func:`sweep` found: setuid files cleared and left, directories not walked, nested ``.git`` entries
    changed since the start (each with what changed in it)."""

    cleared: list[str]
    left: list[str]
    skipped: list[str]
    git: list[tuple[str, list[str]]]


def sweep(workspace: str | os.PathLike[str], since_ns: int | None = None, owner: int | None = None) -> SweepReport:
    """Clear setuid/setgid on every regular file of ``owner`` (default: this process's user) under ``workspace``
    and, with ``since_ns``, list each ``.git`` below the top changed after it.

    Files of other owners, or that changed under the walk, are listed in ``left``.
    """
    owner = os.geteuid() if owner is None else owner
    report = SweepReport([], [], [], [])
    try:
        with SafeDirectory.at(workspace) as root:
            for entry in walk(root, device=os.fstat(root.fd).st_dev, skipped=report.skipped):
                if is_privileged(entry):
                    (report.cleared if clear_privileges(entry, owner) else report.left).append(entry.path)
                if since_ns is not None and is_nested_git(entry):
                    members = changed_since(entry, since_ns)
                    if members is not None:
                        report.git.append((entry.path, members))
    except OSError:
        pass  # the workspace is gone: nothing to clear
    return report
