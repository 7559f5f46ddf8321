"""Read and write a tool's settings file in its own format: TOML for ``*.toml``, JSON otherwise.

Only what sandbox settings need: parse a file into plain data, and render
merged data back. The TOML writer emits tables as ``[a.b]`` sections and
arrays (including arrays of tables) inline, which parses back to the same data.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import sys
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def parse(path: str, data: bytes) -> Any:
    """The document in ``data``; :class:`ValueError` if it is not valid JSON or TOML (as its suffix says),
    or nests deeper than :data:`~cci_core.nesting.MAX_NESTING` levels (the container wrote it)."""
    from cci_core.api import MAX_NESTING, nested_too_deep

    try:
        document = _load(path, data)
    except RecursionError:
        document = None
    if document is None or nested_too_deep(document):
        raise ValueError(f"{path} nests more than {MAX_NESTING} levels deep")
    return document


def _load(path: str, data: bytes) -> Any:
    if not is_toml(path):
        return json.loads(data)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        return tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(str(exc)) from exc


def render(path: str, document: Mapping[str, Any]) -> bytes:
    """``document`` as the file's bytes, in the format its suffix says."""
    text = toml_text(document) if is_toml(path) else json.dumps(document, indent=2) + "\n"
    return text.encode("utf-8")


def is_toml(path: str) -> bool:
    """Whether ``path`` names a TOML file."""
    return path.endswith(".toml")


def toml_text(document: Mapping[str, Any]) -> str:
    """``document`` as TOML: its plain keys first, then one section per table, depth first."""
    lines: list[str] = []
    _table(document, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    plain = [(key, value) for key, value in table.items() if not isinstance(value, Mapping)]
    tables = [(key, value) for key, value in table.items() if isinstance(value, Mapping)]
    if path and (plain or not tables):  # an empty table still needs its header to exist
        lines.extend(["", f"[{'.'.join(_key(part) for part in path)}]"])
    lines.extend(f"{_key(key)} = {_value(value)}" for key, value in plain)
    for key, value in tables:
        _table(value, (*path, key), lines)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(key)} = {_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _string(text: str) -> str:
    # JSON's escapes are all valid in a TOML basic string; TOML also wants DEL escaped
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
