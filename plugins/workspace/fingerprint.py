"""Fingerprints of the workspace files that can make the host run code, and what changed between two.

A fingerprint maps each watched file (a path relative to the workspace) to a
short description: its type, mode and size, and a SHA-256 of its content (the
first :data:`HASH_LIMIT` bytes, with the mtime beyond that). Directories are
described entry by entry, at most :data:`MAX_ENTRIES` of them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping

from cci_builtin_plugins.workspace.walk import walk
from cci_core.host_files import SafeDirectory

HASH_LIMIT = 1 << 20
MAX_ENTRIES = 2000

#: files and directories some host program runs or obeys, reported when they change even if not protected
EXECUTABLE_CONFIG = (
    ".git", ".git/config", ".git/hooks", ".git/modules", ".git/worktrees", ".git/info/attributes",
    ".envrc", ".env", ".vscode", ".idea", ".devcontainer", ".husky", ".githooks", ".pre-commit-config.yaml",
    "mise.toml", ".mise.toml", ".tool-versions", ".cci.toml",
)
#: in the git directories of submodules and worktrees, what git obeys (their objects and logs are not read)
_GIT_DIR_FILES = frozenset({"config", "config.worktree", "gitdir", "commondir", "attributes"})
_GIT_DIR_SKIP = frozenset({"objects", "refs", "logs", "lfs", "rr-cache", "svn"})


def describe(info: os.stat_result, name: str, directory: SafeDirectory) -> str:
    """One entry's fingerprint: type, permissions, size and content hash (or link target)."""
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        try:
            target = directory.readlink(name)
        except OSError:
            target = None
        return "link" if target is None else f"link -> {target}"
    if stat.S_ISDIR(info.st_mode):
        return f"dir {mode:o}"
    if not stat.S_ISREG(info.st_mode):
        return f"special {stat.S_IFMT(info.st_mode):o}"
    try:
        digest = hashlib.sha256(directory.read(name, HASH_LIMIT)[0]).hexdigest()
    except OSError:
        digest = "unreadable"
    beyond = f" mtime {info.st_mtime_ns}" if info.st_size > HASH_LIMIT else ""
    return f"file {mode:o} {info.st_size} {digest}{beyond}"


def _in_nested_git_dir(path: str) -> bool:
    return path.startswith((".git/modules/", ".git/worktrees/"))


def _pruned(path: str) -> bool:
    return _in_nested_git_dir(path) and path.rpartition("/")[2] in _GIT_DIR_SKIP


def _watched(path: str) -> bool:
    """Everything under a watched path, but in nested git directories only git's configs and hooks."""
    return not _in_nested_git_dir(path) or path.rpartition("/")[2] in _GIT_DIR_FILES or "/hooks/" in path


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
    """Describe ``path`` and, for a directory, what it holds (``.git`` itself: only what it is)."""
    parent, _, name = path.rpartition("/")
    try:
        with root.beneath(parent) as directory:
            info = directory.lstat(name)
            if info is None:
                return
            result[path] = describe(info, name, directory)
            if not stat.S_ISDIR(info.st_mode) or path == ".git":
                return
            with directory.directory(name) as inside:
                count = 0
                for entry in walk(inside, f"{path}/", device=info.st_dev, prune=_pruned):
                    if entry.path in result or not _watched(entry.path):
                        continue
                    count += 1
                    if count > MAX_ENTRIES:
                        result[f"{path}/..."] = f"more than {MAX_ENTRIES} entries"
                        return
                    result[entry.path] = describe(entry.stat, entry.name, entry.directory)
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
