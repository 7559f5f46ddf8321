"""Git directories below the workspace's top: a ``.git`` made or changed during a session.

A ``.git`` below the top (a directory, a ``gitdir:`` file or a link) makes its
directory a repository of its own, and git on the host runs what that
repository's config and hooks say, in it and from the top too (a ``git status``
there goes into each submodule the index names). Such a ``.git`` is judged by
change times (``st_ctime_ns``), which the kernel sets on every change and nobody
can set back: no record of the tree is needed from the start. In a ``.git``
directory, everything counts but git's state (:func:`.fingerprint.git_state`),
as in the top one.
"""

from __future__ import annotations

import stat

from cci_builtin_plugins.workspace.fingerprint import git_state
from cci_builtin_plugins.workspace.walk import Entry

#: names of what changed in one ``.git`` that a report lists
SHOWN = 6


class NestedGitChanges:
    """Fed every entry of a walk of the workspace (:meth:`see`): the ``.git`` entries below the top that changed
    from ``since_ns`` on, each with what changed in it."""

    def __init__(self, since_ns: int) -> None:
        self.since_ns = since_ns
        self.found: dict[str, list[str]] = {}

    def see(self, entry: Entry) -> None:
        if entry.path.startswith(".git/") or entry.stat.st_ctime_ns < self.since_ns:
            return  # the top .git is fingerprinted
        if entry.name == ".git" and "/" in entry.path:
            self.found.setdefault(entry.path, [])
            return
        inside = entry.path.rfind("/.git/")
        if inside < 0:
            return
        owner, relative = entry.path[:inside + 5], entry.path[inside + 6:]
        directory = stat.S_ISDIR(entry.stat.st_mode)
        # a submodule's or worktree's git directory changes with every commit in it, like the .git it is in
        if git_state(relative, directory) or directory and relative.startswith(("modules/", "worktrees/")) and \
                relative.rpartition("/")[2] not in ("hooks", "info"):
            return
        self.found.setdefault(owner, []).append(relative)

    def report(self) -> list[tuple[str, str]]:
        """``(path of the .git, what changed in it: names, or '')``, sorted by path."""
        result = []
        for path, changed in sorted(self.found.items()):
            shown = ", ".join(changed[:SHOWN]) + (f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else "")
            result.append((path, shown))
        return result
