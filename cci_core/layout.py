"""Where things are: inside a cci container (the container user, its home, the workspace mount), and cci's own
directory on the host."""

from __future__ import annotations

from pathlib import Path

CONTAINER_USER = "code"
CONTAINER_HOME = f"/home/{CONTAINER_USER}"
WORKSPACE_PATH = "/workspace"


def state_dir(home: Path | None = None) -> Path:
    """cci's own directory on the host, ``~/.cci``: saved sessions, trusted configs, logs, caches, locks.

    :param home: the user's home; default ``$HOME`` (as ``~`` expands). Callers that must not follow
        ``$HOME`` pass another (the host guard passes the one from the password database).
    """
    return (Path.home() if home is None else home) / ".cci"
