"""Workspace files that a repository's ``.git/config`` makes git run or read as config.

``core.hooksPath`` moves the hooks elsewhere (often into the work tree: ``.husky``,
``.githooks``), and ``include.path`` / ``includeIf.*.path`` pull in more config
files. When those lie inside the workspace, protecting ``.git/config`` and
``.git/hooks`` alone would leave the real ones writable: they are protected too.
"""

from __future__ import annotations

import os
import posixpath

from cci_core.host_files import SafeDirectory

CONFIG_LIMIT = 1 << 20


def referenced_paths(workspace: str | os.PathLike[str]) -> list[str]:
    """Workspace-relative paths of the hooks directory and included config files ``.git/config`` names."""
    try:
        with SafeDirectory.at(workspace) as root, root.beneath(".git") as git:
            data = git.read("config", CONFIG_LIMIT)[0]
    except OSError:
        return []
    found = []
    for section, key, value in _entries(data.decode("utf-8", "replace")):
        if section == "core" and key == "hookspath":
            found.append(_inside(str(workspace), "", value))
        elif section in ("include", "includeif") and key == "path":
            found.append(_inside(str(workspace), ".git", value))
    return [path for path in dict.fromkeys(found) if path]


def _entries(text: str) -> list[tuple[str, str, str]]:
    """``(section, key, value)`` of a git config file, names lower-cased; enough for paths (not a full parser)."""
    entries, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            header, _, rest = line[1:].partition("]")
            section = header.split(maxsplit=1)[0].split(".")[0].strip('"').lower() if header.strip() else ""
            line = rest.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        entries.append((section, key.strip().lower(), value))
    return entries


def _inside(workspace: str, base: str, value: str) -> str:
    """``value`` as a path relative to the workspace (relative ones from ``base``), or '' if outside."""
    if value.startswith("~"):
        return ""
    if value.startswith("/"):
        if not value.startswith(workspace.rstrip("/") + "/"):
            return ""
        value = value[len(workspace.rstrip("/")) + 1:]
        base = ""
    path = posixpath.normpath(posixpath.join(base, value))
    return "" if path in (".", "") or path.startswith("../") or path == ".." else path
