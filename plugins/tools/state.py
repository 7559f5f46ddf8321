"""What every tool session gets, whatever the tool: credentials in, state saved out, state restored on resume.

* at every start and resume: the tool's credential files, fresh from the host
  (when ``[defaults] mount_claude_config``), then its sandbox settings merged
  into its settings files (JSON, or TOML for ``*.toml``), all owned by the
  container user, mode 0600;
* at detach, periodically and after the session ends: the tool's state
  directory saved to ``~/.cci/sessions-<tool>/<id>/`` without credential files;
* on resume into a fresh container: that copy put back before the tool runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cci_core import hookimpl
from cci_core.errors import NotFoundError
from cci_core.layout import CONTAINER_HOME

if TYPE_CHECKING:
    from cci_core.context import LaunchContext, SessionEvent
    from cci_core.driver import Container
    from cci_core.session_store import SavedSession
    from cci_core.tool import CredentialFile, ToolAdapter


@hookimpl
def cci_environment(ctx: LaunchContext) -> Mapping[str, str] | None:
    return dict(ctx.tool.environment()) if ctx.tool else None


@hookimpl
def cci_session_restore(ctx: LaunchContext, container: Container) -> None:
    if ctx.tool is None or not ctx.resume_from:
        return
    from cci_core.session_store import SessionStore

    saved = SessionStore().find(ctx.tool.name, ctx.resume_from, ctx.workspace)
    copy = saved.path / saved_name(ctx.tool)
    if copy.is_dir() and not copy.is_symlink():  # (a link would make the host directory it names the state)
        drop_escaping_links(copy)  # saves made before cci dropped them
        uid = ctx.config.incus.claude_uid
        target = home_path(ctx.tool.state_dir)
        make_parents(container, target, uid)
        container.push_tree(copy, target, uid=uid, gid=uid)


@hookimpl
def cci_inject_credentials(ctx: LaunchContext, container: Container) -> None:
    tool = ctx.tool
    if tool is None:
        return
    uid = ctx.config.incus.claude_uid
    if ctx.config.defaults.mount_claude_config:
        for credential in tool.credential_files:
            source = Path(credential.host_path).expanduser()
            if source.is_file():
                target = home_path(credential.container_path)
                make_parents(container, target, uid)
                container.push_file(target, source.read_bytes(), mode=credential.mode, uid=uid, gid=uid)
    from cci_builtin_plugins.tools import settings_files

    for relative, keys in tool.sandbox_settings().items():
        target = home_path(relative)
        make_parents(container, target, uid)
        merged = merge(_read_settings(container, target), keys)
        container.push_file(target, settings_files.render(target, merged), mode=0o600, uid=uid, gid=uid)


@hookimpl
def cci_session_save(ctx: LaunchContext, container: Container, event: SessionEvent) -> None:
    save_state(ctx, container)


@hookimpl
def cci_post_exit_save(ctx: LaunchContext, container: Container) -> None:
    save_state(ctx, container)


def save_state(ctx: LaunchContext, container: Container) -> SavedSession | None:
    """Copy the tool's state directory out of the container (running or stopped), credentials removed."""
    from cci_core.session_store import SavedSession, SessionStore

    tool = ctx.tool
    if tool is None:
        return None

    def fill(directory: Path) -> None:
        copy = directory / saved_name(tool)
        try:
            container.pull_tree(home_path(tool.state_dir), copy)
        except NotFoundError:
            container.status()  # the container itself is gone: this raises, and the last save stays
            shutil.rmtree(copy, ignore_errors=True)  # the directory went away while it was copied
            return  # the tool has no state: the metadata alone records the session
        if copy.is_symlink():  # the state directory made a link by the agent: nothing of it is saved
            copy.unlink()
            return
        drop_escaping_links(copy)  # first: removing credentials must not follow a link out of the copy
        strip_credentials(tool, copy)

    metadata = SavedSession(id=ctx.session_id, tool=tool.name, workspace=str(ctx.workspace),
                            container=ctx.container_name, slot=ctx.slot, persistent=ctx.persistent,
                            created="", saved="", path=Path())
    return SessionStore().save(metadata, fill)


def drop_escaping_links(copy: Path) -> None:
    """Remove the symlinks of a saved copy that lead outside it.

    Their targets were chosen inside the container; on the host, ``/home/you/.ssh``
    is your own directory, and anything that followed such a link (removing the
    credential files, restoring the copy) would act on it.
    """
    import os

    from cci_core.host_files import leads_inside

    for directory, subdirectories, files in os.walk(copy):
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            if os.path.islink(path) and not leads_inside(path, copy):
                os.unlink(path)


def strip_credentials(tool: ToolAdapter, copy: Path) -> None:
    """Remove the tool's credential files from a saved copy of its state directory, and any copy of the
    host's credentials under another name (the agent may have made one, to have it restored later)."""
    state_dir = PurePosixPath(tool.state_dir)
    for credential in tool.credential_files:
        path = PurePosixPath(credential.container_path)
        if state_dir in path.parents:
            found = copy / path.relative_to(state_dir)
            if found.is_symlink() or found.is_file():
                found.unlink()
            elif found.is_dir():
                shutil.rmtree(found)
    secrets = {content for content in map(_host_bytes, tool.credential_files) if content}
    sizes = {len(content) for content in secrets}
    for file in (path for path in copy.rglob("*") if path.is_file() and not path.is_symlink()):
        if file.stat().st_size in sizes and _holds_one_of(file, secrets):
            file.unlink()


def _holds_one_of(file: Path, contents: set[bytes]) -> bool:
    """Whether ``file`` holds exactly one of ``contents``; one that cannot be read (mode 000) counts too."""
    try:
        return file.read_bytes() in contents
    except OSError:
        return True


def _host_bytes(credential: CredentialFile) -> bytes:
    try:
        return Path(credential.host_path).expanduser().read_bytes()
    except OSError:
        return b""


def saved_name(tool: ToolAdapter) -> str:
    """The state directory's name inside a saved session (``.claude`` for ``.claude``, ``x`` for ``.config/x``)."""
    return PurePosixPath(tool.state_dir).name


def home_path(relative: str) -> str:
    """A path relative to the container user's home, refusing anything that escapes it."""
    path = PurePosixPath(CONTAINER_HOME, relative)
    if ".." in PurePosixPath(relative).parts or PurePosixPath(relative).is_absolute():
        raise ValueError(f"{relative!r} is not a path inside the home directory")
    return str(path)


def make_parents(container: Container, path: str, uid: int) -> None:
    """Create the missing directories between the home directory and ``path``, owned by the container user."""
    home = PurePosixPath(CONTAINER_HOME)
    missing = [parent for parent in PurePosixPath(path).parents if home in parent.parents]
    for directory in reversed(missing):
        container.make_directory(str(directory), mode=0o700, uid=uid, gid=uid)


def merge(base: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra``'s keys merged in recursively; ``base``'s other keys are kept."""
    result = dict(base) if isinstance(base, Mapping) else {}
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def _read_settings(container: Container, path: str) -> Any:
    from cci_builtin_plugins.tools import settings_files

    try:
        return settings_files.parse(path, container.pull_file(path))
    except NotFoundError:
        return {}
    except ValueError:  # not valid JSON/TOML: the tool would not read it either, so it is replaced
        return {}
