"""Fingerprints of the workspace files that can make the host run code, and what changed between two.

A fingerprint maps each watched file (a path relative to the workspace) to a
short description: its type, mode and size, a SHA-256 of its content (the first
:data:`HASH_LIMIT` bytes) and its change time (``st_ctime_ns``: the kernel sets it
on every write, and nobody can set it back, root in the container included).
Directories are described entry by entry, in name order: the first
:data:`MAX_ENTRIES` of them one by one, the rest by one digest of their names,
modes and change times.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping

from cci_builtin_plugins.workspace.walk import walk
from cci_core.api import SafeDirectory, sha256

HASH_LIMIT = 1 << 20
MAX_ENTRIES = 2000
#: entries of one watched directory looked at in all (the digest of those past :data:`MAX_ENTRIES` stops there)
MAX_DIGESTED = 200_000

#: files and directories some host program runs or obeys, reported when they change even if not protected
EXECUTABLE_CONFIG = (
    ".git", ".envrc", ".env", ".vscode", ".idea", ".devcontainer", ".husky", ".githooks",
    ".pre-commit-config.yaml", "mise.toml", ".mise.toml", ".tool-versions", ".cci.toml",
)
#: in a git directory (the workspace's, and its submodules' and worktrees' at any depth), what git keeps
#: changing as it works and never runs nor obeys as config: not watched
GIT_STATE = frozenset({"objects", "refs", "logs", "index", "packed-refs", "shallow", "lfs", "annex", "svn", "rr-cache",
                       "gc.pid", "gc.log", "fsmonitor--daemon", "fsmonitor--daemon.ipc"})
#: git's state files too: ``HEAD``, ``ORIG_HEAD``, ``FETCH_HEAD``, ``MERGE_MSG``, ``COMMIT_EDITMSG``, locks...
_GIT_STATE_FILE = re.compile(r"HEAD|[A-Z]+_[A-Z_]+|.*\.lock|sharedindex\..*")


def describe(info: os.stat_result, name: str, directory: SafeDirectory) -> str:
    """One entry's fingerprint: type, permissions, size, content hash and change time (or link target)."""
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        try:
            target = directory.readlink(name)
        except OSError:
            target = None
        return "link" if target is None else f"link -> {target}"
    if stat.S_ISDIR(info.st_mode):
        return f"dir {mode:o}"  # its entries are described: its change time would change with each of them
    if not stat.S_ISREG(info.st_mode):
        return f"special {stat.S_IFMT(info.st_mode):o} ctime {info.st_ctime_ns}"
    try:
        digest = sha256(directory.read(name, HASH_LIMIT)[0]).hexdigest()
    except OSError:
        digest = "unreadable"
    return f"file {mode:o} {info.st_size} {digest} ctime {info.st_ctime_ns}"


def git_state(relative: str, directory: bool) -> bool:
    """Whether ``relative`` (a path in a git directory) is, or lies in, what git changes as it works."""
    parts = relative.split("/")
    return any(part in GIT_STATE for part in parts) or not directory and bool(_GIT_STATE_FILE.fullmatch(parts[-1]))


def _git_state(path: str, directory: bool) -> bool:
    """:func:`git_state` for a path in the top ``.git``."""
    return "/" in path and git_state(path.partition("/")[2], directory)


def _prune_git_state(path: str) -> bool:
    return _git_state(path, True)


def fingerprint(workspace: str | os.PathLike[str], paths: Iterable[str]) -> dict[str, str]:
    """The fingerprint of ``paths`` (relative to ``workspace``) as they are now; missing ones are left out."""
    result: dict[str, str] = {}
    try:
        with SafeDirectory.at(workspace) as root:
            for path in dict.fromkeys(paths):
                _add(root, path, result)
    except OSError:
        pass  # no workspace (any more): nothing to describe
    return result


def _add(root: SafeDirectory, path: str, result: dict[str, str]) -> None:
    """Describe ``path`` and, for a directory, what it holds (in ``.git``: not git's state)."""
    parent, _, name = path.rpartition("/")
    in_git = (path == ".git" or path.startswith(".git/")) and not _git_state(path, False)
    try:
        with root.beneath(parent) as directory:
            info = directory.lstat(name)
            if info is None:
                return
            result[path] = describe(info, name, directory)
            if not stat.S_ISDIR(info.st_mode):
                return
            with directory.directory(name) as inside:
                count, rest = 0, sha256()
                for entry in walk(inside, f"{path}/", device=info.st_dev, prune=_prune_git_state if in_git else None):
                    if entry.path in result or in_git and _git_state(entry.path, stat.S_ISDIR(entry.stat.st_mode)):
                        continue
                    count += 1
                    if count <= MAX_ENTRIES:
                        result[entry.path] = describe(entry.stat, entry.name, entry.directory)
                        continue
                    if count > MAX_DIGESTED:
                        break
                    changed = "" if stat.S_ISDIR(entry.stat.st_mode) else entry.stat.st_ctime_ns
                    rest.update(f"{entry.path}\0{entry.stat.st_mode:o} {changed}\0".encode("utf-8", "surrogateescape"))
                if count > MAX_ENTRIES:
                    limit = f", the first {MAX_DIGESTED} looked at" if count > MAX_DIGESTED else ""
                    result[f"{path}/..."] = f"more than {MAX_ENTRIES} entries{limit}: {rest.hexdigest()}"
    except OSError:
        return  # missing, or a link or file on the way: nothing of the workspace's there


def changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(path, 'created' | 'removed' | 'changed')`` for each path that differs, sorted by path."""
    found = []
    for path in sorted(set(before) | set(after)):
        if path not in before:
            found.append((path, "created"))
        elif path not in after:
            found.append((path, "removed"))
        elif before[path] != after[path]:
            found.append((path, "changed"))
    return found


def advice(path: str) -> str:
    """What the user should check about a changed path, and why it matters."""
    top = path.split("/")[0]
    if path == ".git":
        return "git on the host now uses it: check .git/config and .git/hooks before running git there"
    if top == ".git" and ("/hooks/" in f"/{path}/" or path.endswith("/hooks")):
        return "git runs hooks on the host: check it before your next git command"
    if top == ".git" and path.rpartition("/")[2] in ("commondir", "gitdir"):
        return ("git on the host reads config and hooks from the directory it names: check it, and that "
                "directory's config and hooks, before your next git command")
    if top == ".git":
        return ("git on the host obeys it (core.fsmonitor, core.hooksPath, aliases, filters run commands): "
                "check it before your next git command")
    if top == ".envrc":
        return "direnv runs it when you enter the directory: check it before 'direnv allow'"
    if top in (".vscode", ".idea", ".devcontainer"):
        return "your editor may run tasks or commands from it: check it before opening the folder"
    if top in (".husky", ".githooks", ".pre-commit-config.yaml"):
        return "git hooks on the host may run it: check it before your next commit"
    return "tools on the host read it and may run what it says: check it before using them"
