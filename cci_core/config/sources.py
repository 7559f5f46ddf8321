"""Read one TOML config file and remember the line of every table and key in it."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from cci_core.errors import ConfigError
from cci_core.nesting import MAX_NESTING, nested_too_deep

_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_PARTS = re.compile(_PART)
_HEADER = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(rf"^\s*({_DOTTED})\s*=")
#: config files are a few hundred bytes; anything near this is not one
MAX_CONFIG_BYTES = 1024 * 1024
_TOML_POSITION = re.compile(r"^(.*?)\s*\(at (?:line (\d+), column (\d+)|end of document)\)$", re.DOTALL)


def display_path(path: Path) -> str:
    """Show ``path`` with the home directory shortened to ``~``."""
    home = os.path.expanduser("~")
    text = str(path)
    if home not in ("", "/", "~") and (text == home or text.startswith(home.rstrip("/") + "/")):
        return "~" + text[len(home.rstrip("/")):]
    return text


def _split_key(dotted: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in _PARTS.findall(dotted))


def index_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each ``[table]`` header and ``key =`` line to its first line number (1-based).

    A best-effort scan: keys inside inline tables or multi-line strings are
    not indexed, and callers fall back to the enclosing key's line.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string = False
    for number, line in enumerate(text.splitlines(), start=1):
        was_in_string = in_string
        in_string ^= (line.count('"""') + line.count("'''")) % 2 == 1
        if was_in_string:
            continue
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            lines.setdefault(table, number)
        elif key := _KEY.match(line):
            lines.setdefault(table + _split_key(key.group(1)), number)
    return lines


class ConfigFile(NamedTuple):
    """A parsed config file and the line numbers of its keys."""

    path: Path
    data: Mapping[str, Any]
    lines: Mapping[tuple[str, ...], int]
    raw: bytes = b""

    def digest(self) -> str:
        """SHA-256 of the bytes that were parsed (what a user trusts, see :mod:`cci_core.config.trust`)."""
        from cci_core.digests import sha256

        return sha256(self.raw).hexdigest()

    def where(self, *key: str) -> str:
        """``path:line`` of the key, or of its nearest enclosing key; just the path if none is found."""
        for length in range(len(key), 0, -1):
            line = self.lines.get(key[:length])
            if line:
                return f"{display_path(self.path)}:{line}"
        return display_path(self.path)


def _tomllib() -> Any:
    """The TOML parser, imported only once a config file exists (it costs ~3 ms)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    return tomllib


def read_config_file(path: Path) -> ConfigFile | None:
    """Parse ``path``; ``None`` if it does not exist, :class:`ConfigError` if unreadable or malformed."""
    try:
        # a FIFO or device (a link the container made?) is refused, not read; O_NONBLOCK: opening a FIFO waits
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ConfigError("cannot read config file: not a regular file", source=display_path(path))
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", source=display_path(path)) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"cannot read config file: larger than {MAX_CONFIG_BYTES // 1024} KiB",
                          source=display_path(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("cannot read config file: not valid UTF-8", source=display_path(path)) from exc
    tomllib = _tomllib()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.match(str(exc))
        reason, line, column = match.groups() if match else (str(exc), None, None)
        line = line or str(max(1, len(text.splitlines())))
        detail = f"{reason} (column {column})" if column else reason
        raise ConfigError(f"invalid TOML: {detail}", source=f"{display_path(path)}:{line}") from exc
    except RecursionError:
        data = None
    if data is None or nested_too_deep(data):
        raise ConfigError(f"invalid config: tables or arrays nested more than {MAX_NESTING} levels deep",
                          source=display_path(path), hint="flatten the file; cci's settings nest two levels")
    return ConfigFile(path, data, index_lines(text), raw)
