"""An exclusive lock among this user's cci processes: a ``flock`` on a file under ``~/.cci`` (released when the
process dies, too)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def held(path: Path) -> Iterator[int]:
    """Hold the lock of ``path`` (made, with its 0700 directory, if missing); yields the open file, read-write."""
    import fcntl

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)
