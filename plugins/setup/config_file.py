"""Recording a setting in a TOML config file without disturbing what the file holds already."""

from __future__ import annotations

import re
from typing import Any

from cci_core.api import ConfigError, toml_parser

tomllib = toml_parser()

HEADER = "# Written by 'cci setup'; edit freely (cci setup only adds keys that are missing).\n"


def recorded(text: str | None, section: str, key: str) -> Any:
    """The value of ``[section] key`` in ``text`` (a config file's content, None when there is none), or None."""
    if not text:
        return None
    table = tomllib.loads(text).get(section)
    return table.get(key) if isinstance(table, dict) else None


def with_setting(text: str | None, section: str, key: str, value: str, *, path: str) -> str:
    """``text`` with ``[section] key = "value"`` added; everything else kept as it is, byte for byte.

    A new file starts with :data:`HEADER`. The key goes right under the ``[section]`` header when the file has
    one, else into a new table at the end. Raises :class:`ConfigError` when the file is not valid TOML, or
    when the result would not be (e.g. the table is written inline), rather than guess.
    """
    line = f"{key} = {_quote(value)}\n"
    try:
        if recorded(text, section, key) is not None:
            return text or ""
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})", hint=f"fix it, or add '{line.strip()}' under "
                                                                     f"[{section}] yourself") from None
    if not text:
        return f"{HEADER}\n[{section}]\n{line}"
    header = re.search(rf"^[ \t]*\[[ \t]*{re.escape(section)}[ \t]*\][ \t]*(#.*)?$\n?", text, re.MULTILINE)
    if header:
        end = header.end()
        prefix = text[:end] if text[:end].endswith("\n") else text[:end] + "\n"
        result = prefix + line + text[end:]
    else:
        result = text + ("" if text.endswith("\n") else "\n") + f"\n[{section}]\n{line}"
    try:
        ok = recorded(result, section, key) == value
    except tomllib.TOMLDecodeError:
        ok = False
    if not ok:
        raise ConfigError(f"cannot add [{section}] {key} to {path} safely",
                          hint=f"add '{line.strip()}' under [{section}] yourself, then run cci setup again")
    return result


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
