"""The workspace guard: what the agent may not change in the workspace, and what the user is told at the end.

* At each first start, every ``[security] protected_paths`` entry present in the
  workspace is mounted read-only over itself, and a ``.git`` directory gets a
  mount of its own so it cannot be renamed or replaced (:func:`protected_mounts`).
* Before each start, the files that can make the host run code are
  fingerprinted and the time is noted; when cci ends the session it prints one
  warning per such file that changed or appeared, and walks the workspace once:
  it clears setuid/setgid bits and warns about each ``.git`` below the top that
  changed since the start (:mod:`.sweep`).

What this does and does not protect: docs/security.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cci_core.api import WORKSPACE_PATH, Mount, hookimpl

if TYPE_CHECKING:
    from cci_core.api import Container, LaunchContext

#: the label listing the protection mounts of a container (to take them off before a restart)
LABEL = "protected"
DEVICE_PREFIX = "protect-"


def protected_mounts(workspace: Path, paths: Sequence[str]) -> list[Mount]:
    """Read-only mounts of each of ``paths`` that is a real file or directory in ``workspace`` now.

    Links, FIFOs and devices, and paths with a link on the way, are not mounted
    (Incus would follow the link). When any path is in ``.git``, a ``.git``
    directory is mounted read-write over itself first (the container cannot
    rename a mount point); a ``.git`` file (a worktree's or submodule's
    link), or ``.git`` listed itself, is mounted read-only.
    """
    import stat

    from cci_core.api import SafeDirectory

    mounts = []
    try:
        with SafeDirectory.at(workspace) as root:
            if any(path == ".git" or path.startswith(".git/") for path in paths):
                git = root.lstat_beneath(".git")
                if git is not None and (stat.S_ISDIR(git.st_mode) or stat.S_ISREG(git.st_mode)):
                    readonly = stat.S_ISREG(git.st_mode) or ".git" in paths
                    mounts.append(_mount("git", ".git", workspace, readonly=readonly))
            for index, path in enumerate(dict.fromkeys(paths)):
                info = root.lstat_beneath(path)
                if path != ".git" and info is not None and (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                    mounts.append(_mount(str(index), path, workspace, readonly=True))
    except OSError:
        return []
    return mounts


def protected_paths(workspace: Path, configured: Sequence[str]) -> list[str]:
    """The configured paths, and with ``.git/config`` the hooks directory and config files it names in the
    workspace (``core.hooksPath``, includes: :mod:`.git_refs`)."""
    from cci_builtin_plugins.workspace.git_refs import referenced_paths

    extra = referenced_paths(workspace) if ".git/config" in configured else []
    return list(dict.fromkeys((*configured, *extra)))


def _mount(name: str, path: str, workspace: Path, *, readonly: bool) -> Mount:
    return Mount(f"{DEVICE_PREFIX}{name}", workspace / path, f"{WORKSPACE_PATH}/{path}", shift=True,
                 readonly=readonly)


def watched_paths(protected: Sequence[str]) -> list[str]:
    """The protected paths and every known executable-config path, each once."""
    from cci_builtin_plugins.workspace.fingerprint import EXECUTABLE_CONFIG

    return list(dict.fromkeys((*protected, *EXECUTABLE_CONFIG)))


def baseline_file(container: str) -> Path:
    """Where a session's fingerprints from its start are kept until it ends."""
    from cci_core.api import default_root

    return default_root() / "workspace-guard" / f"{container}.json"


def file_clock(directory: Path) -> int:
    """The time the kernel stamps on a file changed now (a new file's ``st_ctime_ns`` in ``directory``): a file
    changed from now on has that change time or a later one (the kernel's file clock ticks coarser than
    :func:`time.time_ns`)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # an unnamed file (O_TMPFILE), nothing to clean up: not the tempfile module, which takes 4 ms to import
        probe = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
        try:
            return os.fstat(probe).st_ctime_ns
        finally:
            os.close(probe)
    except (OSError, AttributeError):  # (a file system without O_TMPFILE)
        return time.time_ns() - 1_000_000_000  # a tick is a jiffy, at most 10 ms: a second is ample


@hookimpl
def cci_pre_start(ctx: LaunchContext, container: Container, restart: bool) -> None:
    """Mount the protected paths (a first start only) and record the watched files as they are."""
    from cci_builtin_plugins.workspace.fingerprint import fingerprint
    from cci_core.api import replace_private_json

    protected = protected_paths(ctx.workspace, ctx.config.security.protected_paths)
    if restart:
        # the rootfs is the agent's and any other session of the workspace could be racing a path into a
        # link while Incus mounts it: no protection mounts for a restart (docs/security.md)
        names = [name for name in container.labels().get(LABEL, "").split(",") if name]
        if names:
            container.remove_mounts(names)
            container.set_labels({LABEL: ""})
    elif not ctx.synced:  # (a copied workspace: the protected paths never come back, see cci_core.workspace_sync)
        mounts = protected_mounts(ctx.workspace, protected)
        if mounts:
            container.configure({}, mounts)
            container.set_labels({LABEL: ",".join(mount.device for mount in mounts)})
    paths = watched_paths(protected)
    baseline = baseline_file(container.name)
    started = file_clock(baseline.parent)
    replace_private_json(baseline, {
        "workspace": str(ctx.workspace), "session": ctx.session_id, "paths": paths, "started_ns": started,
        "fingerprint": fingerprint(ctx.workspace, paths)})


@hookimpl
def cci_session_end(ctx: LaunchContext, deleted: bool, report: Callable[[str], None]) -> None:
    """Warn about each watched file and nested ``.git`` that changed since the start; clear setuid/setgid bits in
    the workspace."""
    from cci_builtin_plugins.workspace.fingerprint import advice, changes, fingerprint
    from cci_builtin_plugins.workspace.sweep import sweep
    from cci_core.api import read_json

    path = baseline_file(ctx.container_name)
    start = read_json(path)
    started = None
    if isinstance(start, dict) and start.get("workspace") == str(ctx.workspace) and \
            isinstance(start.get("paths"), list) and isinstance(start.get("fingerprint"), dict):
        before, now = start["fingerprint"], fingerprint(ctx.workspace, [str(item) for item in start["paths"]])
        if isinstance(start.get("started_ns"), int):
            started = start["started_ns"]
        else:
            before, now = _as_recorded_before(before, now)
        for changed, how in changes(before, now):
            report(f"workspace file {changed} was {how} during session {ctx.container_name}: {advice(changed)}")
    try:
        os.unlink(path)
    except OSError:
        pass
    found = sweep(ctx.workspace, started)
    for git, changed in found.git:
        inside = f" ({changed})" if changed else ""
        report(f"workspace git directory {git} was created or changed during session {ctx.container_name}{inside}: "
               "git on the host runs what its config and hooks say, in that directory and from a 'git status' at "
               "the top: check them, and where a .git file or link points, before your next git command")
    for cleared in found.cleared:
        report(f"cleared the setuid/setgid bit of workspace file {cleared} (set in the container: anyone who "
               "can reach it could have run it as you)")
    for left in found.left:
        report(f"workspace file {left} is setuid/setgid and not yours: cci cannot clear it; remove it "
               "(e.g. sudo rm) before anyone runs it")
    for skipped in found.skipped:
        report(f"could not check workspace directory {skipped} for setuid files and git directories")


def _as_recorded_before(before: dict[str, str], now: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A start recorded by a cci before change times and all of ``.git`` were watched: compared as it was then."""
    import re

    times = re.compile(r" [cm]time \d+$")
    now = {path: how for path, how in now.items() if path in before or not path.startswith(".git/")}
    return ({path: times.sub("", how) for path, how in before.items()},
            {path: times.sub("", how) for path, how in now.items()})
