"""Workspace files that a repository's ``.git/config`` makes git run or read as config.

``core.hooksPath`` moves the hooks elsewhere (often into the work tree: ``.husky``,
``.githooks``), and ``include.path`` / ``includeIf.*.path`` pull in more config
files. When those lie inside the workspace, protecting ``.git/config`` and
``.git/hooks`` alone would leave the real ones writable: they are protected too.
The config is read as git reads it (comments, quotes, escapes, continued lines),
and included files inside the workspace are read in turn.
"""

from __future__ import annotations

import os
import posixpath

from cci_core.api import SafeDirectory

CONFIG_LIMIT = 1 << 20
#: included files read at most (git itself stops at a depth of 10)
MAX_INCLUDES = 50


def referenced_paths(workspace: str | os.PathLike[str]) -> list[str]:
    """Workspace-relative paths of the hooks directories and included config files ``.git/config`` names.

    Includes are followed (within the workspace, :data:`MAX_INCLUDES` files at most);
    ``includeIf`` conditions are not evaluated: each of its files might be included.
    """
    found: list[str] = []
    pending, read = [".git/config"], set()
    try:
        with SafeDirectory.at(workspace) as root:
            while pending and len(read) <= MAX_INCLUDES:
                config = pending.pop(0)
                read.add(config)
                for section, subsection, key, value in entries(_read(root, config)):
                    if value is None:
                        continue
                    if (section, subsection, key) == ("core", None, "hookspath"):
                        found.append(_inside(str(workspace), "", value))  # relative: to the work tree's top
                    elif key == "path" and (section, subsection is None) in (("include", True), ("includeif", False)):
                        included = _inside(str(workspace), posixpath.dirname(config), value)
                        found.append(included)
                        if included and included not in read and included not in pending:
                            pending.append(included)
    except OSError:
        pass  # no workspace (any more): nothing to protect
    return [path for path in dict.fromkeys(found) if path]


def _read(root: SafeDirectory, path: str) -> str:
    """Regular file ``path`` in the workspace (no link followed on the way), or '' when it is not one."""
    parent, _, name = path.rpartition("/")
    try:
        with root.beneath(parent) as directory:
            return directory.read(name, CONFIG_LIMIT)[0].decode("utf-8", "replace")
    except OSError:
        return ""


def entries(text: str) -> list[tuple[str, str | None, str, str | None]]:
    """``(section, subsection, key, value)`` of each variable in git config ``text``, as git parses it.

    Section and key names are lower-cased (a subsection keeps its case); a key
    without ``=`` has the value None. A line git would refuse ends the parse: git
    then refuses the whole file, so the entries before it are only over-protected.
    """
    found: list[tuple[str, str | None, str, str | None]] = []
    text = text.replace("\r\n", "\n") + "\n"  # git reads the end as a newline
    position, section, subsection = 0, "", None
    while position < len(text):
        char = text[position]
        if char in _SPACE or char == "\n":
            position += 1
        elif char in "#;":
            position = text.index("\n", position)
        elif char == "[":
            header = _section(text, position + 1)
            if header is None:
                break
            section, subsection, position = header
        elif char.isalpha():
            end = position
            while text[end].isalnum() or text[end] == "-":
                end += 1
            key, position = text[position:end].lower(), end
            while text[position] in _SPACE:
                position += 1
            value = None
            if text[position] == "=":
                parsed = _value(text, position + 1)
                if parsed is None:
                    break
                value, position = parsed
            elif text[position] != "\n":
                break
            found.append((section, subsection, key, value))
        else:
            break
    return found


def _section(text: str, position: int) -> tuple[str, str | None, int] | None:
    """A ``[section]`` or ``[section "subsection"]`` header from after its ``[``: names and where it ends."""
    end = position
    while text[end].isalnum() or text[end] in "-.":
        end += 1
    name = text[position:end].lower()
    if text[end] == "]":
        if "." in name:  # the old [section.subsection] form
            name, _, old = name.partition(".")
            return name, old, end + 1
        return name, None, end + 1
    if text[end] not in " \t" or "." in name:
        return None
    while text[end] in " \t":
        end += 1
    if text[end] != '"':
        return None
    chars, end = [], end + 1
    while text[end] != '"':
        if text[end] == "\n":
            return None
        if text[end] == "\\":
            end += 1
            if text[end] == "\n":
                return None
        chars.append(text[end])
        end += 1
    if text[end + 1] != "]":
        return None
    return name, "".join(chars), end + 2


_SPACE = " \t\r\v\f"
_ESCAPES = {"\n": "", "t": "\t", "b": "\b", "n": "\n", "\\": "\\", '"': '"'}


def _value(text: str, position: int) -> tuple[str, int] | None:
    """A value from after its ``=`` to the end of its (last continued) line: the value and where its line ends."""
    chars: list[str] = []
    quoted = comment = False
    trim = None  # where trailing unquoted whitespace began
    while True:
        if position >= len(text):  # a continued last line: git reads the end as a newline
            return None if quoted else ("".join(chars[:trim] if trim is not None else chars), len(text))
        char = text[position]
        position += 1
        if char == "\n":
            if quoted:
                return None
            return "".join(chars[:trim] if trim is not None else chars), position - 1
        if comment:
            continue
        if char in _SPACE and not quoted:
            if chars:
                trim = len(chars) if trim is None else trim
                chars.append(" ")  # as git does
            continue
        if not quoted and char in "#;":
            comment = True
            continue
        trim = None
        if char == "\\":
            escaped = _ESCAPES.get(text[position])  # the text ends with a newline: never past it
            if escaped is None:
                return None
            position += 1
            chars.append(escaped)
        elif char == '"':
            quoted = not quoted
        else:
            chars.append(char)


def _inside(workspace: str, base: str, value: str) -> str:
    """``value`` as a path relative to the workspace (relative ones from ``base``), or '' if outside."""
    if value.startswith("~"):
        value = os.path.expanduser(value)
        if value.startswith("~"):
            return ""
    if value.startswith("/"):
        for top in dict.fromkeys((workspace.rstrip("/"), os.path.realpath(workspace))):
            if value.startswith(top + "/"):
                value, base = value[len(top) + 1:], ""
                break
        else:
            return ""
    path = posixpath.normpath(posixpath.join(base, value))
    return "" if path in (".", "") or path.startswith("../") or path == ".." else path
