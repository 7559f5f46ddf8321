"""Git directories below the workspace's top: a ``.git`` made or changed during a session.

A ``.git`` below the top (a directory, a ``gitdir:`` file or a link) makes its
directory a repository of its own, and git on the host runs what that
repository's config and hooks say, in it and from the top too (a ``git status``
there goes into each submodule the index names). Such a ``.git`` is judged by
change times (``st_ctime_ns``), which the kernel sets on every change and nobody
can set back: no record of the tree is needed from the start.
"""

from __future__ import annotations

import stat

from cci_builtin_plugins.workspace.walk import Entry
from cci_core.host_files import SafeDirectory

#: what git obeys in a git directory, besides its hooks
MEMBERS = ("config", "config.worktree", "commondir", "gitdir", "info/attributes")
#: hooks looked at in one hooks directory
MAX_HOOKS = 1000


def is_nested_git(entry: Entry) -> bool:
    """Whether ``entry`` is a ``.git`` below the workspace's top (not in the top ``.git``, watched otherwise)."""
    return entry.name == ".git" and "/" in entry.path and not entry.path.startswith(".git/")


def changed_since(entry: Entry, since_ns: int) -> list[str] | None:
    """None when neither ``.git`` ``entry`` nor what git obeys in it has a change time from ``since_ns`` on;
    otherwise the names of what has in it (empty when only the entry itself has)."""
    members: list[str] = []
    if stat.S_ISDIR(entry.stat.st_mode):
        try:
            with entry.directory.directory(entry.name) as git:
                members = _changed_members(git, since_ns)
        except OSError:
            pass  # gone or swapped meanwhile: its own change time tells
    return members if members or entry.stat.st_ctime_ns >= since_ns else None


def _changed_members(git: SafeDirectory, since_ns: int) -> list[str]:
    found = []
    for member in MEMBERS:
        parent, _, name = member.rpartition("/")
        try:
            with git.beneath(parent) as directory:
                info = directory.lstat(name)
        except OSError:
            continue
        if info is not None and info.st_ctime_ns >= since_ns:
            found.append(member)
    info = git.lstat("hooks")
    if info is None or not stat.S_ISDIR(info.st_mode):
        return [*found, "hooks"] if info is not None and info.st_ctime_ns >= since_ns else found
    if info.st_ctime_ns >= since_ns:
        found.append("hooks")  # a hook added, removed or renamed
    try:
        with git.directory("hooks") as hooks:
            for name in hooks.names()[:MAX_HOOKS]:
                hook = hooks.lstat(name)
                if hook is not None and hook.st_ctime_ns >= since_ns:
                    found.append(f"hooks/{name}")
    except OSError:
        pass
    return found
