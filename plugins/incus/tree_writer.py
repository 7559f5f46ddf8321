"""Writing a directory tree into an Incus instance (:meth:`Container.write_tree`): one tar archive, made here while
the entries come and streamed into GNU ``tar`` inside over the exec's standard input, so that the whole tree costs one
exec and no request per file (the workspace of a session on a remote Incus: :mod:`cci_core.workspace_sync`).

``tar`` runs as root inside, so that it can make the directory and give every entry the owner asked for; what it
writes stays inside the instance, which is the agent's anyway.
"""

from __future__ import annotations

import os
import tarfile
import threading
import time
from collections.abc import Iterable

from cci_core.api import BackendError, TreeEntry
from cci_builtin_plugins.incus.execute import start_command
from cci_builtin_plugins.incus.rest import IncusAPI

#: run inside as root with the directory: made if missing, then the archive on stdin unpacked into it (modes as
#: archived, owners by number, read-only directories made so only after what they hold)
SCRIPT = ('mkdir -p -- "$1" && cd -- "$1" && '
          'exec tar -x -f - --preserve-permissions --same-owner --numeric-owner --delay-directory-restore')
#: stderr kept from the unpacking tar (its complaints)
MAX_STDERR = 64 * 1024


def write_tree(api: IncusAPI, instance: str, path: str, entries: Iterable[TreeEntry], *, uid: int, gid: int) -> None:
    """Write ``entries`` below ``path`` in ``instance`` as one streamed archive (see the module)."""
    read_end, write_end = os.pipe()
    failed: list[BaseException] = []
    now = int(time.time())

    def archive() -> None:
        try:
            with os.fdopen(write_end, "wb") as sink, tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) \
                    as tar:
                for entry in entries:
                    tar.addfile(*_member(entry, uid, gid, now))
        except BrokenPipeError:
            pass  # tar inside stopped reading: its exit says why
        except BaseException as exc:  # (the host side: a file that could not be read)
            failed.append(exc)

    errors = bytearray()

    def keep(chunk: bytes) -> None:
        if len(errors) < MAX_STDERR:
            errors.extend(chunk[:MAX_STDERR - len(errors)])

    producer = threading.Thread(target=archive, daemon=True, name="write-tree")
    with os.fdopen(read_end, "rb", buffering=0) as source:
        producer.start()
        try:
            code = start_command(api, instance, ["sh", "-c", SCRIPT, "sh", path], stdin=source,  # type: ignore[arg-type]
                                 stderr=keep).wait()
        finally:
            producer.join()
    if failed:
        raise failed[0]
    if code != 0:
        said = errors.decode("utf-8", errors="replace").strip().splitlines()
        raise BackendError(f"writing {path} in {instance}: tar exited with {code}" + (f" ({said[0]})" if said else ""))


def _member(entry: TreeEntry, uid: int, gid: int, mtime: int) -> tuple[tarfile.TarInfo, object]:
    """The tar header of ``entry`` and the stream of its content (None but for a file)."""
    member = tarfile.TarInfo(entry.path)
    member.uid, member.gid, member.mtime, member.mode = uid, gid, mtime, entry.mode & 0o7777
    if entry.kind == "directory":
        member.type = tarfile.DIRTYPE
        return member, None
    if entry.kind == "symlink":
        member.type, member.linkname, member.mode = tarfile.SYMTYPE, entry.target, 0o777
        return member, None
    if entry.kind != "file" or entry.data is None:
        raise BackendError(f"{entry.path}: only files with their content, directories and symlinks can be written")
    member.type, member.size = tarfile.REGTYPE, entry.size
    return member, entry.data
