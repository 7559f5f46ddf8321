"""Files only the invoking user may read: saved sessions, the address cache, trusted configs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """The JSON document in ``path``, or None when it is missing, unreadable or malformed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (from creation on), flushed to disk."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def replace_private_json(path: Path, document: Any) -> None:
    """Replace ``path`` by ``document`` atomically (a reader sees old or new), 0600 in a 0700 directory."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    write_private(temporary, json.dumps(document, indent=1))
    os.replace(temporary, path)
