"""Writing a workspace's ``.cci.toml`` in tests, trusted as the user would with ``cci config trust``."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cci_core.config import WORKSPACE_FILE
from cci_core.config.trust import TrustStore


def write_trusted(workspace: Path, text: str) -> Path:
    """Write ``workspace/.cci.toml`` and trust its content in the current user's store (``$HOME/.cci``)."""
    file = workspace.resolve() / WORKSPACE_FILE
    file.write_text(text)
    TrustStore().trust(file, hashlib.sha256(file.read_bytes()).hexdigest())
    return file
