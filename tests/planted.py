"""A cached file someone else could have put there: what a cache must never use (see ``only_mine``)."""

from __future__ import annotations

import os
from pathlib import Path

#: the ways: a cache directory anyone may write to, a file of another user, a symbolic link
PLANTS = ("writable directory", "other owner", "symbolic link")


def plant(path: Path, how: str) -> None:
    """Put a file saying ``planted`` at ``path`` (in a cache directory of mode 0700) the way ``how`` says."""
    if how == "symbolic link":
        elsewhere = path.parent.parent / "elsewhere"
        elsewhere.write_bytes(b"planted")
        path.symlink_to(elsewhere)
        return
    path.write_bytes(b"planted")
    if how == "writable directory":
        path.parent.chmod(0o777)
    else:
        os.lchown(path, os.geteuid() + 1, -1)  # lchown: some tests make os.chown a no-op
