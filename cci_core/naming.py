"""Container names: ``cci-<8 hex of sha256 of the workspace's real path>-<slot>``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from cci_core.digests import sha256

PREFIX = "cci"
_SESSION_NAME = r"^cci-([0-9a-f]{8})-([1-9][0-9]*)$"


class SessionName(NamedTuple):
    """The parts of a session container's name."""

    workspace_id: str
    slot: int


def workspace_id(workspace: Path) -> str:
    """8 hex digits identifying a workspace by its real path (symlinks resolved)."""
    real = os.path.realpath(workspace)
    return sha256(real.encode()).hexdigest()[:8]


def container_name(workspace: Path, slot: int) -> str:
    """The session container name for ``workspace`` and ``slot`` (1 or more)."""
    if slot < 1:
        raise ValueError(f"slot must be 1 or more, got {slot}")
    return f"{PREFIX}-{workspace_id(workspace)}-{slot}"


def parse_name(name: str) -> SessionName | None:
    """Split a session container name; None for any other name."""
    match = re.match(_SESSION_NAME, name)
    return SessionName(match[1], int(match[2])) if match else None
