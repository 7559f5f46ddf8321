"""Check TOML values and parse environment/flag text against schema type hints.

Supported hints: ``str``, ``bool``, ``int``, ``list[X]``, ``dict[str, X]``,
``dict[str, list[X]]`` and ``X | None`` of those. Failures raise :class:`Invalid` with a message such as
``expected a boolean (true or false), got string "yes"``.
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

_UNION_TYPES = (Union, getattr(types, "UnionType", Union))
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SCALARS = {
    bool: ("a boolean (true or false)", "booleans"),
    int: ("an integer", "integers"),
    str: ("a string", "strings"),
}


def _quoted(text: str) -> str:
    """``text`` in double quotes, escaped as in TOML and JSON (json is imported only for error messages)."""
    import json

    return json.dumps(text)


class Invalid(ValueError):
    """A value does not fit the type its setting declares."""


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """Return ``(X, True)`` for ``X | None`` and ``(tp, False)`` otherwise."""
    if get_origin(tp) in _UNION_TYPES:
        args = [arg for arg in get_args(tp) if arg is not type(None)]
        return args[0], True
    return tp, False


def describe_type(tp: Any) -> str:
    """Name a type hint for messages: ``a list of strings``."""
    base, _ = _strip_optional(tp)
    origin = get_origin(base)
    if origin is list:
        return f"a list of {_SCALARS[get_args(base)[0]][1]}"
    if origin is dict:
        item = get_args(base)[1]
        if get_origin(item) is list:
            return f"a table of lists of {_SCALARS[get_args(item)[0]][1]}"
        return f"a table of {_SCALARS[item][1]}"
    return _SCALARS[base][0]


def describe_value(value: Any) -> str:
    """Name a value and its TOML type for messages: ``string "yes"``."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"{'integer' if isinstance(value, int) else 'float'} {value}"
    if isinstance(value, str):
        return f"string {_quoted(value)}"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return f"{type(value).__name__} {value}"


def _is(tp: Any, value: Any) -> bool:
    return isinstance(value, tp) and not (tp is int and isinstance(value, bool))


def check_value(tp: Any, value: Any) -> Any:
    """Return ``value`` (containers copied) if it is of type ``tp``, else raise :class:`Invalid`."""
    base, _ = _strip_optional(tp)
    origin = get_origin(base)
    if origin is list:
        if not isinstance(value, list):
            raise Invalid(f"expected {describe_type(tp)}, got {describe_value(value)}")
        for index, item in enumerate(value):
            if not _is(get_args(base)[0], item):
                raise Invalid(f"expected {describe_type(tp)}, got {describe_value(item)} at index {index}")
        return list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise Invalid(f"expected {describe_type(tp)}, got {describe_value(value)}")
        item_type = get_args(base)[1]
        for name, item in value.items():
            if get_origin(item_type) is list:
                if not isinstance(item, list):
                    raise Invalid(f"expected {describe_type(tp)}, got {describe_value(item)} for {name!r}")
                for index, element in enumerate(item):
                    if not _is(get_args(item_type)[0], element):
                        raise Invalid(f"expected {describe_type(tp)}, got {describe_value(element)} at index {index} "
                                      f"of {name!r}")
                value = {**value, name: list(item)}
            elif not _is(item_type, item):
                raise Invalid(f"expected {describe_type(tp)}, got {describe_value(item)} for {name!r}")
        return dict(value)
    if not _is(base, value):
        raise Invalid(f"expected {describe_type(tp)}, got {describe_value(value)}")
    return value


def parse_text(tp: Any, text: str) -> Any:
    """Parse an environment variable or flag string into type ``tp``.

    Booleans accept 1/0, true/false, yes/no, on/off (any case); lists are
    comma-separated; an empty string means ``None`` for an optional key.
    """
    base, optional = _strip_optional(tp)
    origin = get_origin(base)
    if optional and not text:
        return None
    if origin is list:
        return [parse_text(get_args(base)[0], part.strip()) for part in text.split(",") if part.strip()]
    if origin is dict:
        raise Invalid(f"expected {describe_type(tp)}, which cannot be given as text")
    if base is bool:
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise Invalid(f"expected a boolean (1/0, true/false, yes/no, on/off), got {_quoted(text)}")
    if base is int:
        try:
            return int(text.strip())
        except ValueError:
            raise Invalid(f"expected an integer, got {_quoted(text)}") from None
    return text
