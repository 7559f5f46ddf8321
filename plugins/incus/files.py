"""Files in an Incus instance over the files API: single files, and whole trees in both directions.

A GET of a path answers with its type in ``X-Incus-Type``: a file's content,
a directory's entry names (JSON), or a symlink's target resolved to an
absolute path. A POST creates one
file, directory or symlink with the owner and mode in ``X-Incus-*`` headers.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from cci_core.errors import CciError, NotFoundError, UsageError
from cci_core.host_files import remove_link, write_no_follow
from cci_builtin_plugins.incus.rest import IncusAPI, Response, quote


#: symlinks followed when reading one file before giving up (as the kernel's ELOOP limit)
MAX_SYMLINK_HOPS = 40


class InstanceFiles:
    """The files of one instance."""

    def __init__(self, api: IncusAPI, instance: str) -> None:
        self.api = api
        self.instance = instance
        self._path = f"/1.0/instances/{quote(instance)}/files"

    def read(self, path: str, action: str) -> Response:
        """GET ``path``: its type is in the ``X-Incus-Type`` header."""
        return self.api.request("GET", self._path, action, params={"path": path})

    def write(self, path: str, action: str, *, kind: str = "file", data: bytes = b"", mode: int = 0o644,
              uid: int = 0, gid: int = 0) -> None:
        """Create or replace one file, directory or symlink (``data`` is a symlink's target)."""
        headers = {"X-Incus-type": kind, "X-Incus-uid": str(uid), "X-Incus-gid": str(gid),
                   "X-Incus-mode": f"{mode & 0o7777:04o}", "Content-Type": "application/octet-stream"}
        if kind == "file":
            headers["X-Incus-write"] = "overwrite"
        self.api.request("POST", self._path, action, params={"path": path}, data=data, headers=headers)

    def pull_file(self, path: str) -> tuple[bytes, int]:
        """A regular file's content and mode, following symlinks; a directory is refused."""
        action = f"reading {path} in {self.instance}"
        response = self.read(path, action)
        for _hop in range(MAX_SYMLINK_HOPS):
            if _kind(response) != "symlink":
                break
            response = self.read(_link_target(response), action)
        else:
            raise CciError(f"{action}: too many levels of symbolic links")
        if _kind(response) == "directory":
            raise UsageError(f"{self.instance}:{path} is a directory", hint="copy a directory with -r")
        return response.body, _mode(response, 0o644)

    def push_tree(self, source: Path, path: str, *, uid: int, gid: int) -> None:
        """Copy host directory ``source`` to ``path``, keeping modes and symlinks; merged into what exists."""
        action = f"copying {source} to {self.instance}:{path}"
        self.write(path, action, kind="directory", mode=_host_mode(source), uid=uid, gid=gid)
        for root, directories, files in os.walk(source):
            relative = PurePosixPath(path, Path(root).relative_to(source).as_posix())
            for name in sorted(directories) + sorted(files):
                local = Path(root, name)
                target = str(relative / name)
                if local.is_symlink():
                    self.write(target, action, kind="symlink", data=os.readlink(local).encode(), uid=uid, gid=gid)
                elif local.is_dir():
                    self.write(target, action, kind="directory", mode=_host_mode(local), uid=uid, gid=gid)
                elif local.is_file():
                    self.write(target, action, data=_read(local), mode=_host_mode(local), uid=uid, gid=gid)
            directories[:] = [name for name in directories if not Path(root, name).is_symlink()]

    def pull_tree(self, path: str, destination: Path) -> None:
        """Copy ``path`` (a directory, or a single file) to host path ``destination``.

        Symlinks stay symlinks; Incus reports their targets resolved to absolute
        paths, so a target inside the copied tree becomes relative again.
        """
        self._pull(path, destination, root=str(PurePosixPath(path)))

    def _pull(self, path: str, destination: Path, root: str) -> None:
        action = f"copying {self.instance}:{path} to {destination}"
        response = self.read(path, action)
        kind = _kind(response)
        if kind == "directory":
            remove_link(destination)  # never merge into where a link (the container's, maybe) leads
            destination.mkdir(exist_ok=True)
            for name in response.json().get("metadata") or []:
                try:
                    self._pull(str(PurePosixPath(path, name)), destination / name, root)
                except NotFoundError:
                    # removed since the listing (a tool's temporary file): not copied. Unless the
                    # directory, or the container, went away: reading it again raises then.
                    self.read(path, action)
        elif kind == "symlink":
            target = _link_target(response)
            if target == root or target.startswith(root.rstrip("/") + "/"):
                target = os.path.relpath(target, str(PurePosixPath(path).parent))
            if destination.is_symlink() or destination.exists():
                destination.unlink()
            destination.symlink_to(target)
        else:
            write_no_follow(destination, response.body, _mode(response, 0o644))


def _link_target(response: Response) -> str:
    return response.body.decode(errors="surrogateescape")


def _kind(response: Response) -> str:
    return str(response.headers.get("X-Incus-Type") or response.headers.get("X-LXD-Type") or "file")


def _mode(response: Response, default: int) -> int:
    value = response.headers.get("X-Incus-Mode") or response.headers.get("X-LXD-Mode")
    try:
        return int(value, 8) if value else default
    except ValueError:
        return default


def _host_mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CciError(f"cannot read {path}: {exc.strerror}") from None
