"""The one walk of the workspace when a session ends: setuid bits cleared, nested git directories checked.

Every directory is opened from its parent's descriptor, no link followed, on the
workspace's filesystem only (:mod:`.walk`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from cci_builtin_plugins.workspace.nested_git import NestedGitChanges
from cci_builtin_plugins.workspace.setuid import clear_privileges, is_privileged
from cci_builtin_plugins.workspace.walk import walk
from cci_core.api import SafeDirectory


class SweepReport(NamedTuple):
    """What :func:`sweep` found: setuid files cleared and left, directories not walked, nested ``.git`` entries
    changed since the start (each with the names of what changed in it, or '')."""

    cleared: list[str]
    left: list[str]
    skipped: list[str]
    git: list[tuple[str, str]]


def sweep(workspace: str | os.PathLike[str], since_ns: int | None = None, owner: int | None = None) -> SweepReport:
    """Clear setuid/setgid on every regular file of ``owner`` (default: this process's user) under ``workspace``
    and, with ``since_ns``, list each ``.git`` below the top changed from then on (:mod:`.nested_git`).

    Files of other owners, or that changed under the walk, are listed in ``left``.
    """
    owner = os.geteuid() if owner is None else owner
    report = SweepReport([], [], [], [])
    nested = NestedGitChanges(since_ns) if since_ns is not None else None
    try:
        with SafeDirectory.at(workspace) as root:
            for entry in walk(root, device=os.fstat(root.fd).st_dev, skipped=report.skipped):
                if is_privileged(entry):
                    (report.cleared if clear_privileges(entry, owner) else report.left).append(entry.path)
                if nested is not None:
                    nested.see(entry)
    except OSError:
        pass  # the workspace is gone: nothing to clear
    if nested is not None:
        report.git.extend(nested.report())
    return report
