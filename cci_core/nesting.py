"""Limits on how deeply parsed documents (TOML, JSON) may nest.

Parsers and the code walking their results recurse; a document nested thousands of
levels deep (a ``.cci.toml`` or a settings file the agent wrote) would otherwise end
in a ``RecursionError`` instead of one clear line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: deeper than any real config or settings file, far below Python's recursion limit
MAX_NESTING = 64


def nested_too_deep(document: Any, limit: int = MAX_NESTING) -> bool:
    """Whether the tables and arrays of ``document`` nest more than ``limit`` levels deep (no recursion)."""
    level: list[Any] = [document]
    for _depth in range(limit + 1):
        level = [child for value in level for child in _children(value)]
        if not level:
            return False
    return True


def _children(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [item for item in value.values() if isinstance(item, (Mapping, list, tuple))]
    if isinstance(value, (list, tuple)):
        return [item for item in value if isinstance(item, (Mapping, list, tuple))]
    return []
