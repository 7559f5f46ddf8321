"""Find installed distributions' entry points by reading ``entry_points.txt`` directly.

``importlib.metadata`` would do the same job, but it pulls in ``email``,
``zipfile`` and more: 15–30 ms of ``cci --help`` and ``cci plugins list`` on the
reference machine (``benchmarks/startup.py --measures``). This reader handles what pip and
setuptools install: ``*.dist-info`` and ``*.egg-info`` directories on
``sys.path``. As ``importlib.metadata`` does, the first distribution of a
given name on ``sys.path`` wins.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from typing import NamedTuple

_METADATA_DIR = re.compile(r"^(?P<name>[^-]+)(?:-(?P<version>[^-]+))?.*\.(?:dist|egg)-info$")
_VALUE = re.compile(r"^(?P<module>[\w.]+)\s*(?::\s*(?P<attr>[\w.]+)\s*)?(?:\[.*\]\s*)?$")


class EntryPoint(NamedTuple):
    """One ``name = module[:attr]`` line of an entry-point group."""

    name: str
    value: str
    group: str
    metadata_dir: str

    def load(self) -> object:
        """Import the module and return it, or the named attribute inside it."""
        match = _VALUE.match(self.value)
        if not match:
            raise ImportError(f"malformed entry point value {self.value!r}")
        target: object = importlib.import_module(match["module"])
        for part in (match["attr"] or "").split(".") if match["attr"] else ():
            target = getattr(target, part)
        return target

    def distribution(self) -> tuple[str, str]:
        """The distribution's name and version, from its metadata file (or its directory name)."""
        folder = os.path.basename(self.metadata_dir)
        fallback = _METADATA_DIR.match(folder)
        name, version = (fallback["name"], fallback["version"] or "") if fallback else (folder, "")
        for metadata in ("METADATA", "PKG-INFO"):
            headers = _read_headers(os.path.join(self.metadata_dir, metadata))
            if headers:
                return headers.get("name", name), headers.get("version", version)
        return name, version


def find_entry_points(group: str, path: Iterable[str] | None = None) -> list[EntryPoint]:
    """Every entry point of ``group`` declared by the distributions on ``path`` (default ``sys.path``)."""
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for entry in sys.path if path is None else path:
        directory = entry or "."
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for folder in names:
            if not folder.endswith((".dist-info", ".egg-info")):  # cheap test first: most entries are packages
                continue
            match = _METADATA_DIR.match(folder)
            if not match:
                continue
            key = re.sub(r"[-_.]+", "_", match["name"]).lower()
            if key in seen:
                continue
            seen.add(key)
            metadata_dir = os.path.join(directory, folder)
            found.extend(_parse_group(os.path.join(metadata_dir, "entry_points.txt"), group, metadata_dir))
    return found


def _parse_group(file: str, group: str, metadata_dir: str) -> list[EntryPoint]:
    try:
        with open(file, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    entries, current = [], None
    for raw in lines:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
        elif current == group and "=" in line:
            name, _, value = line.partition("=")
            entries.append(EntryPoint(name.strip(), value.strip(), group, metadata_dir))
    return entries


def _read_headers(file: str) -> dict[str, str]:
    """``Name`` and ``Version`` from an RFC 822-style metadata file (only the header block is read)."""
    headers: dict[str, str] = {}
    try:
        with open(file, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    break
                key, sep, value = line.partition(":")
                if sep and key.lower() in ("name", "version"):
                    headers.setdefault(key.lower(), value.strip())
    except OSError:
        return {}
    return headers
