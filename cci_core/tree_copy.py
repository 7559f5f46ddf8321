"""Copying a directory tree out of a container into a private host directory: safely, bounded, filtered.

The entries come from :meth:`~cci_core.driver.Container.read_tree`, and every
name, kind, size, link target and byte in them is the container's choice. So
the copy

* writes only regular files, directories and symlinks, each created fresh
  (``O_EXCL``) through directory file descriptors opened without following a
  link, so nothing is ever written outside the destination; names with ``..``,
  absolute names, odd components and too deep paths are refused;
* keeps a symlink only when its target stays inside the copy;
* streams file content to disk (runs of zeros become holes), skips files over
  :data:`MAX_FILE` and stops at ``max_total`` (a save's: ``[limits] save_size``, :data:`MAX_TOTAL` by default),
  each entry counted as :data:`ENTRY_SIZE` on top of its content;
* filters before anything is written: paths excluded by name, files holding a
  secret value (dropped), and secret keys removed from JSON files.

Files are written 0600 (0700 when executable), directories 0700.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from cci_core.driver import UNREADABLE, TreeEntry, TreeLimits, TreeReadError
from cci_core.host_files import SafeDirectory, SparseWriter

if TYPE_CHECKING:
    from cci_core.driver import Container

MiB = 1 << 20
#: files larger than this are not copied (a warning names them)
MAX_FILE = 256 * MiB
#: the copy stops (with a warning) once this much file content has been written (a save's: ``[limits] save_size``)
MAX_TOTAL = 2048 * MiB
#: seconds a whole copy may take before it is abandoned
TIMEOUT = 300.0
#: seconds without progress before it is abandoned
IDLE = 60.0
#: JSON files up to this size are parsed to remove secret keys; a larger one that names a secret key is dropped
MAX_JSON = 16 * MiB
#: what each entry written counts toward ``max_total`` on top of its content: the block a directory, a long link or
#: a small file takes on the host (an empty entry is not free: 20,000 empty directories take 80 MB of ext4)
ENTRY_SIZE = 4096
#: entries of one tree, and levels of directories, beyond which a copy stops
MAX_ENTRIES = 500_000
MAX_DEPTH = 128
#: the longest name component and symlink target kept
MAX_NAME = 255
MAX_TARGET = 4096
#: the longest path (in bytes) an entry of a copy may have on the host: deeper ones are left out (as unreadable), so
#: that every part of a copy can be named by path (the links through links are checked by path once it is complete)
MAX_HOST_PATH = 4095


def save_limits(max_total: int = MAX_TOTAL) -> TreeLimits:
    """The bounds of reading a tree whose copy stops at ``max_total`` bytes (``[limits] save_size``): no file over
    that, nor over :data:`MAX_FILE`, is read, and what the reader takes in stays near ``max_total``."""
    max_file = min(MAX_FILE, max_total)
    return TreeLimits(max_file=max_file, max_bytes=max_total + max_file + 64 * MiB, timeout=TIMEOUT, idle=IDLE)


#: the bounds of a save of the default size
LIMITS = save_limits()

_CHUNK = 1 << 20


class CopyPolicy(NamedTuple):
    """What is kept out of a copy.

    :param excluded: relative paths (tuples of components) never copied, with everything under them.
    :param secrets: a file holding any of these byte strings is not copied.
    :param secret_keys: keys removed (with their values) from JSON files, at any depth.
    """

    excluded: frozenset[tuple[str, ...]] = frozenset()
    secrets: tuple[bytes, ...] = ()
    secret_keys: frozenset[str] = frozenset()


@dataclass
class CopyReport:
    """What a copy left out, for warnings."""

    too_large: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # held a secret, or unreadable JSON naming a secret key
    stripped: list[str] = field(default_factory=list)  # JSON files whose secret keys were removed
    refused: int = 0  # odd names, duplicates, links leading out
    unreadable: list[str] = field(default_factory=list)  # entries (with what is below) the driver could not read
    truncated: bool = False  # stopped at MAX_TOTAL or MAX_ENTRIES
    written: int = 0


def copy_tree(entries: Iterable[TreeEntry], destination: Path, policy: CopyPolicy = CopyPolicy(), *,
              source: str = "", max_file: int = MAX_FILE, max_total: int = MAX_TOTAL,
              max_entries: int = MAX_ENTRIES) -> CopyReport:
    """Write ``entries`` (the tree's root first) as a new directory ``destination``; what was left out.

    ``source`` is the tree's path in the container: absolute link targets inside
    it become relative. Nothing is made when the first entry is not the root
    directory (the tree is a link, or a file). ``destination`` must not exist.
    """
    report = CopyReport()
    writer: _Writer | None = None
    try:
        for count, entry in enumerate(entries):
            if writer is None:
                if entry_parts(entry.path) != () or entry.kind != "directory":
                    return report
                os.mkdir(destination, 0o700)
                writer = _Writer(destination, policy, source, report, max_file, max_total)
                continue
            if count >= max_entries:
                report.truncated = True
                return report
            if not writer.add(entry):
                return report
    finally:
        if writer is not None:
            writer.close()
    return report


def entry_parts(name: str) -> tuple[str, ...] | None:
    """The components of a relative entry name; None for anything that could leave the tree."""
    if "\0" in name or name.startswith("/"):
        return None
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if len(parts) > MAX_DEPTH or any(part == ".." or len(os.fsencode(part)) > MAX_NAME for part in parts):
        return None
    return parts


def json_named(name: str) -> bool:
    """Whether a file name looks like a JSON document or a backup of one (``x.json``, ``x.json.backup.1``)."""
    return ".json" in name and not name.endswith(".jsonl")


class _Writer:
    def __init__(self, root: Path, policy: CopyPolicy, source: str, report: CopyReport, max_file: int,
                 max_total: int) -> None:
        self.policy, self.source, self.report = policy, source.rstrip("/"), report
        self.room = MAX_HOST_PATH - len(os.fsencode(os.path.abspath(root)))  # for the names below the root
        self.max_file, self.max_total = max_file, max_total
        self.directories: dict[tuple[str, ...], SafeDirectory] = {(): SafeDirectory.at(root)}
        self.markers = tuple(json.dumps(key).encode() for key in sorted(policy.secret_keys))

    def close(self) -> None:
        for directory in self.directories.values():
            directory.close()
        self.directories.clear()

    def add(self, entry: TreeEntry) -> bool:
        """Write one entry; False once the copy must stop."""
        if entry.kind == UNREADABLE:
            self.report.unreadable.append(entry.path)
            return True
        parts = entry_parts(entry.path)
        if not parts:  # leads out, or a second root
            self.report.refused += 1
            return True
        if sum(len(os.fsencode(part)) + 1 for part in parts) > self.room:
            self.report.unreadable.append(entry.path)  # too long a path for the host
            return True
        if any(parts[:length] in self.policy.excluded for length in range(1, len(parts) + 1)):
            return True
        parent = self._directory(parts[:-1])
        if parent is None:  # under a link, a file, or a refused directory
            self.report.refused += 1
            return True
        name, shown = parts[-1], "/".join(parts)
        if entry.kind == "file" and (entry.data is None or entry.size > self.max_file):
            self.report.too_large.append(shown)
            return True
        if self.report.written + ENTRY_SIZE + (entry.size if entry.kind == "file" else 0) > self.max_total:
            self.report.truncated = True
            return False
        self.report.written += ENTRY_SIZE
        if entry.kind == "directory":
            try:
                self._keep(parts, parent.directory(name, create=True, mode=0o700))
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise  # else a link or file is there: what the directory holds is refused
        elif entry.kind == "symlink":
            target = self._link_target(parts, entry.target)
            if target is None:
                self.report.refused += 1
            else:
                try:
                    parent.symlink(name, target, replace=False)
                except FileExistsError:
                    self.report.refused += 1
        elif entry.kind == "file":
            return self._file(parent, name, shown, entry)
        return True

    def _directory(self, parts: tuple[str, ...]) -> SafeDirectory | None:
        """Directory ``parts`` in the copy, every component opened without following links."""
        directory = self.directories.get(parts)
        if directory is not None:
            return directory
        parent = self._directory(parts[:-1])
        if parent is None:
            return None
        try:
            return self._keep(parts, parent.directory(parts[-1]))
        except OSError:
            return None

    def _keep(self, parts: tuple[str, ...], directory: SafeDirectory) -> SafeDirectory:
        """Hold ``directory`` open for the entries that follow (the root and the newest few)."""
        if len(self.directories) > 256:
            for key in [key for key in self.directories if key and key != parts[:-1]]:
                self.directories.pop(key).close()
        if parts in self.directories:  # a directory listed twice
            self.directories.pop(parts).close()
        self.directories[parts] = directory
        return directory

    def _link_target(self, parts: tuple[str, ...], target: str) -> str | None:
        """``target`` if the link at ``parts`` stays inside the copy (an absolute one inside the source is made
        relative), else None. Links through links are checked again once the copy is complete."""
        if not target or "\0" in target or len(target) > MAX_TARGET:
            return None
        if target.startswith("/"):
            if not self.source or not (target + "/").startswith(self.source + "/"):
                return None
            target = posixpath.relpath(target, posixpath.join(self.source, *parts[:-1]))
        depth = len(parts) - 1
        for component in target.split("/"):
            if component == "..":
                depth -= 1
                if depth < 0:
                    return None
            elif component not in ("", "."):
                depth += 1
        return target

    def _file(self, parent: SafeDirectory, name: str, shown: str, entry: TreeEntry) -> bool:
        assert entry.data is not None
        outcome = "kept"
        try:
            with parent.create(name, 0o700 if entry.mode & 0o100 else 0o600) as file:
                if self.policy.secret_keys and json_named(name) and entry.size <= MAX_JSON:
                    outcome = self._json(file, entry.data, entry.size)
                else:
                    outcome = self._stream(file, entry.data, json_named(name))
        except FileExistsError:
            self.report.refused += 1
            return True
        finally:
            if outcome not in ("kept", "stripped"):
                parent.remove(name)
        if outcome == "stripped":
            self.report.stripped.append(shown)
        elif outcome == "secret":
            self.report.dropped.append(shown)
        elif outcome == "too large":
            self.report.too_large.append(shown)
        elif outcome == "over total":
            self.report.truncated = True
            return False
        return True

    def _stream(self, file: SparseWriter, data: BinaryIO, json_file: bool) -> str:
        """Copy ``data`` to ``file`` a chunk at a time, each checked for secrets before it is written."""
        secrets = self.policy.secrets + (self.markers if json_file else ())
        keep = max((len(secret) for secret in secrets), default=1) - 1  # held back: a secret may span two chunks
        pending, length = b"", 0
        while chunk := data.read(_CHUNK):
            length += len(chunk)
            if length > self.max_file:
                return "too large"
            if self.report.written + length > self.max_total:
                return "over total"
            window = pending + chunk
            if any(secret in window for secret in secrets):
                return "secret"
            cut = len(window) - keep
            file.write(window[:cut])
            pending = window[cut:]
        file.write(pending)
        file.finish()
        self.report.written += length
        return "kept"

    def _json(self, file: SparseWriter, data: BinaryIO, size: int) -> str:
        """A small JSON file: read whole, secret keys removed, then checked for secrets like any file."""
        content = data.read(size + 1)
        while len(content) <= size and (more := data.read(size + 1 - len(content))):
            content += more
        if len(content) > size:
            return "too large"
        if self.report.written + len(content) > self.max_total:
            return "over total"
        outcome = "kept"
        if any(marker in content for marker in self.markers):
            try:
                document = json.loads(content)
            except (ValueError, RecursionError):
                return "secret"  # names a secret key, and cannot be cleaned
            try:
                content = (json.dumps(_without(document, self.policy.secret_keys), indent=2) + "\n").encode()
            except RecursionError:
                return "secret"
            outcome = "stripped"
        if any(secret in content for secret in self.policy.secrets):
            return "secret"
        file.write(content)
        file.finish()
        self.report.written += len(content)
        return outcome


def _without(document: Any, keys: frozenset[str]) -> Any:
    if isinstance(document, dict):
        return {key: _without(value, keys) for key, value in document.items() if key not in keys}
    if isinstance(document, list):
        return [_without(item, keys) for item in document]
    return document


# -- the default Container.read_tree: a pull_tree into a private temporary directory ----------------------


@contextlib.contextmanager
def entries_of_pulled_tree(container: Container, path: str, limits: TreeLimits) -> Iterator[Iterator[TreeEntry]]:
    """``container.pull_tree(path)`` into a private temporary directory, then read from there as entries."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cci-tree-") as temporary:
        copy = Path(temporary, "tree")
        container.pull_tree(path, copy)
        yield walk_entries(copy, limits)


def walk_entries(root: Path, limits: TreeLimits) -> Iterator[TreeEntry]:
    """A host directory as entries (root first), read through directory descriptors (no link followed, only
    regular files opened); a root that is not a directory gives none."""
    deadline = time.monotonic() + limits.timeout
    try:
        directory = SafeDirectory.at(root)
    except OSError:
        return
    with directory:
        yield TreeEntry(".", "directory", 0o700)
        yield from _entries_below(directory, "", limits, deadline)


def _entries_below(directory: SafeDirectory, prefix: str, limits: TreeLimits, deadline: float,
                   depth: int = 1) -> Iterator[TreeEntry]:
    if time.monotonic() > deadline:
        raise TreeReadError(f"reading {directory.path} took over {limits.timeout:.0f} s")
    for name in directory.names():
        info, shown = directory.lstat(name), prefix + name
        if info is None:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            target = directory.readlink(name)
            if target is not None:
                yield TreeEntry(shown, "symlink", target=target)
        elif stat.S_ISDIR(info.st_mode):
            yield TreeEntry(shown, "directory", mode)
            if depth < MAX_DEPTH:  # deeper entries would be refused
                with directory.directory(name) as child:
                    yield from _entries_below(child, f"{shown}/", limits, deadline, depth + 1)
        elif stat.S_ISREG(info.st_mode) and info.st_size > limits.max_file:
            yield TreeEntry(shown, "file", mode, info.st_size)
        elif stat.S_ISREG(info.st_mode):
            with directory.open_file(name) as handle:
                yield TreeEntry(shown, "file", mode, info.st_size, data=handle)


def printable(name: str, limit: int = 120) -> str:
    """A container-chosen name made safe to print (control characters escaped, length bounded)."""
    text = "".join(char if char.isprintable() else f"\\x{ord(char) & 0xff:02x}" for char in name[:limit])
    return text + ("..." if len(name) > limit else "")
