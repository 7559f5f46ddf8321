"""A workspace whose sessions run the stand-in tool (tests/plugins/cci-stand-in-tool), for integration tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.workspace_config import write_trusted

#: the workspace config that selects the stand-in tool, its program in the workspace
CONFIG = '[tool]\nname = "stand-in"\nbinary = "/workspace/.stand-in"\n'


def stand_in_workspace(root: Path, config: str = "") -> Path:
    """Make directory ``root`` a workspace of the stand-in tool: its program in it, its config (with ``config``
    added) trusted."""
    from cci_stand_in_tool import SCRIPT

    root.mkdir()
    shutil.copy(SCRIPT, root / ".stand-in")
    (root / ".stand-in").chmod(0o755)
    write_trusted(root, CONFIG + config)
    return root
