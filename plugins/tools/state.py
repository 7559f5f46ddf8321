"""What every tool session gets, whatever the tool: credentials in, state saved out, state restored on resume.

* at every start and resume: the tool's credential files, fresh from the host
  (when ``[defaults] inject_credentials``, also spelled ``mount_claude_config``), then its sandbox settings merged
  into its settings files (JSON, or TOML for ``*.toml``), all owned by the
  container user, mode 0600, written anew: a link or file the agent put at their place (or on the way) is never
  followed (see :func:`cci_core.api.write_home_file`); a secret the launch passes by placeholder
  (``ctx.substitutions``) is replaced by its placeholder in the copies;
* at detach, periodically and after the session ends: the tool's state
  directory saved to ``~/.cci/sessions-<tool>/<id>/`` without credentials
  (files by name, files holding an injected secret, secret keys of JSON files);
* on resume into a fresh container: that copy put back before the tool runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cci_core.api import NotFoundError, hookimpl, home_path, make_home_directories, warn

if TYPE_CHECKING:
    from cci_core.api import (
        Container,
        CopyPolicy,
        CopyReport,
        CredentialFile,
        LaunchContext,
        SavedSession,
        SessionEvent,
        Substitution,
        ToolAdapter,
    )


@hookimpl
def cci_environment(ctx: LaunchContext) -> Mapping[str, str] | None:
    return dict(ctx.tool.environment()) if ctx.tool else None


@hookimpl
def cci_session_restore(ctx: LaunchContext, container: Container) -> None:
    if ctx.tool is None or not ctx.resume_from:
        return
    from cci_core.api import SessionStore

    saved = SessionStore().find(ctx.tool.name, ctx.resume_from, ctx.workspace)
    copy = saved.path / saved_name(ctx.tool)
    if copy.is_dir() and not copy.is_symlink():  # (a link would make the host directory it names the state)
        drop_escaping_links(copy)  # saves made before cci dropped them
        uid = container.user_uid
        target = home_path(ctx.tool.state_dir)
        # a fresh container, no agent's process run in it yet: only the directories on the way are checked
        make_home_directories(container, target, uid)
        container.push_tree(copy, target, uid=uid, gid=uid)


@hookimpl
def cci_inject_credentials(ctx: LaunchContext, container: Container) -> None:
    tool = ctx.tool
    if tool is None:
        return
    uid = container.user_uid
    if ctx.config.defaults.inject_credentials:
        for credential in tool.credential_files:
            source = Path(credential.host_path).expanduser()
            if source.is_file():
                content = with_placeholders(source.read_bytes(), ctx.substitutions)
                _write(container, home_path(credential.container_path), content, uid, credential.mode)
    from cci_builtin_plugins.tools import settings_files

    for relative, keys in tool.sandbox_settings().items():
        target = home_path(relative)
        merged = merge(_read_settings(container, target), keys)
        _write(container, target, settings_files.render(target, merged), uid, 0o600)


def _write(container: Container, path: str, content: bytes, uid: int, mode: int) -> None:
    """``content`` as a new file of the container user's at ``path`` (see :func:`cci_core.api.write_home_file`);
    what the agent put in the way of it is a warning, never a failed start."""
    from cci_core.api import HomeFileRefused, write_home_file

    try:
        write_home_file(container, path, content, uid=uid, mode=mode)
    except HomeFileRefused as exc:
        warn(f"{path} was not written: {exc}")


def with_placeholders(content: bytes, substitutions: Sequence[Substitution]) -> bytes:
    """A credential file with each secret passed by placeholder replaced by its placeholder, wherever it is."""
    for secret in substitutions:
        content = content.replace(secret.value.encode(), secret.placeholder.encode())
    return content


@hookimpl
def cci_session_save(ctx: LaunchContext, container: Container, event: SessionEvent) -> None:
    save_state(ctx, container)


@hookimpl
def cci_post_exit_save(ctx: LaunchContext, container: Container) -> None:
    save_state(ctx, container)


def save_state(ctx: LaunchContext, container: Container) -> SavedSession | None:
    """Copy the tool's state directory out of the container (running or stopped), credentials left out.

    The copy is filtered while it streams, before anything is written (see
    :mod:`cci_core.tree_copy`). Entries the container's side cannot read are left
    out with a warning. A copy that cannot finish within its bounds is abandoned
    with a warning: the last save stays, and None is returned. Only what is not the
    container's doing fails a save: Incus unreachable, the container gone, the host's
    disk full.
    """
    from cci_core.api import CopyReport, SavedSession, SessionStore, TreeReadError, copy_tree, save_limits, save_size_of

    tool = ctx.tool
    if tool is None:
        return None
    source = home_path(tool.state_dir)
    policy = copy_policy(tool)
    max_total = save_size_of(container.labels(), ctx.config)
    limits = save_limits(max_total)
    reports: list[CopyReport] = []

    def fill(directory: Path) -> None:
        copy = directory / saved_name(tool)
        try:
            with container.read_tree(source, limits) as entries:
                reports.append(copy_tree(entries, copy, policy, source=source, max_file=limits.max_file,
                                         max_total=max_total))
            if reports[-1].unreadable:
                container.status()  # left out because the container itself went away: this raises
        except NotFoundError:
            container.status()  # the container itself is gone: this raises, and the last save stays
            import shutil  # (here: loading the tool plugins must not import it)

            shutil.rmtree(copy, ignore_errors=True)  # the directory went away while it was copied
            return  # the tool has no state: the metadata alone records the session
        if copy.is_dir():
            drop_escaping_links(copy)  # links through links, which a single entry cannot show

    metadata = SavedSession(id=ctx.session_id, tool=tool.name, workspace=str(ctx.workspace),
                            container=ctx.container_name, slot=ctx.slot, persistent=ctx.persistent,
                            created="", saved="", path=Path())
    try:
        saved = SessionStore().save(metadata, fill)
    except TreeReadError as exc:
        warn(f"session {ctx.session_id} was not saved this time ({exc}); its last save is kept")
        return None
    for report in reports:
        _warn_about(ctx.session_id, report, limits.max_file, max_total)
    return saved


def _warn_about(session_id: str, report: CopyReport, max_file: int, max_total: int) -> None:
    from cci_core.api import MAX_DEPTH, printable_name as printable

    def names(paths: list[str]) -> str:
        shown = ", ".join(printable(path) for path in paths[:5])
        return shown + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")

    if report.too_large:
        warn(f"session {session_id}: {len(report.too_large)} file(s) over {max_file >> 20} MiB not saved: "
             f"{names(report.too_large)}")
    if report.dropped:
        warn(f"session {session_id}: {len(report.dropped)} file(s) holding a credential not saved: "
             f"{names(report.dropped)}")
    if report.unreadable:
        warn(f"session {session_id}: {len(report.unreadable)} entr{'y' if len(report.unreadable) == 1 else 'ies'} "
             f"that could not be read (too long a path, over {MAX_DEPTH} levels down, refused) not saved, "
             f"with what is below them: {names(report.unreadable)}")
    if report.truncated:
        warn(f"session {session_id}: the save stopped at its bound ({max_total >> 20} MiB, [limits] save_size); "
             "the files after that point were not saved")


def drop_escaping_links(copy: Path) -> None:
    """Remove the symlinks of a saved copy that lead outside it.

    Their targets were chosen inside the container; on the host, ``/home/you/.ssh``
    is your own directory, and anything that followed such a link (restoring
    the copy) would act on it.
    """
    import os

    from cci_core.api import leads_inside

    for directory, subdirectories, files in os.walk(copy):
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            if os.path.islink(path) and not leads_inside(path, copy):
                os.unlink(path)


def copy_policy(tool: ToolAdapter) -> CopyPolicy:
    """What a save of ``tool``'s state leaves out: its credential files by name, any file holding a secret
    value of the credentials injected, and the tool's secret keys in JSON files."""
    from cci_core.api import CopyPolicy

    state_dir = PurePosixPath(tool.state_dir)
    excluded = frozenset(PurePosixPath(credential.container_path).relative_to(state_dir).parts
                         for credential in tool.credential_files
                         if state_dir in PurePosixPath(credential.container_path).parents)
    return CopyPolicy(excluded, tuple(sorted(secret_values(tool))), frozenset(tool.secret_keys))


#: the shortest value taken for a secret (shorter ones would match ordinary text)
MIN_SECRET = 8
#: in the credential files of a tool that declares no secret keys, strings this long count as secrets
MIN_UNKEYED_SECRET = 16
#: credential files read for their values up to this size
MAX_CREDENTIAL = 4 << 20


def secret_values(tool: ToolAdapter) -> set[bytes]:
    """The secrets the host's credential files hold, as the injected copies do: each whole file, and each
    value under one of the tool's secret keys (any string of 16+ characters if it declares none); a file
    that is not JSON counts as one token."""
    import json

    found: set[bytes] = set()
    for credential in tool.credential_files:
        content = _host_bytes(credential)
        if len(content.strip()) < MIN_SECRET:
            continue
        found.add(content)
        try:
            document = json.loads(content)
        except (ValueError, RecursionError):
            found.add(content.strip())
            continue
        strings = _strings(document, frozenset(tool.secret_keys), inside=not tool.secret_keys)
        minimum = MIN_SECRET if tool.secret_keys else MIN_UNKEYED_SECRET
        found.update(value.encode() for value in strings if len(value) >= minimum)
    return found


def _strings(document: Any, keys: frozenset[str], inside: bool) -> list[str]:
    """The strings of a JSON document that lie under one of ``keys`` (or all of them when ``inside``)."""
    if isinstance(document, str):
        return [document] if inside else []
    if isinstance(document, dict):
        return [value for key, item in document.items() for value in _strings(item, keys, inside or key in keys)]
    if isinstance(document, list):
        return [value for item in document for value in _strings(item, keys, inside)]
    return []


def _host_bytes(credential: CredentialFile) -> bytes:
    try:
        with Path(credential.host_path).expanduser().open("rb") as handle:
            return handle.read(MAX_CREDENTIAL)
    except OSError:
        return b""


def saved_name(tool: ToolAdapter) -> str:
    """The state directory's name inside a saved session (``.claude`` for ``.claude``, ``x`` for ``.config/x``)."""
    return PurePosixPath(tool.state_dir).name


def merge(base: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra``'s keys merged in recursively; ``base``'s other keys are kept."""
    result = dict(base) if isinstance(base, Mapping) else {}
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


#: a settings file in the container read up to this size to merge into (larger: replaced by the sandbox settings)
MAX_SETTINGS = 64 << 20


def _read_settings(container: Container, path: str) -> Any:
    """The settings file's document, {} when there is none to merge into: nothing (or a link, a FIFO...) there, a
    file too large or not valid JSON/TOML (the tool would not read it either). None of it is a failed start."""
    from cci_core.api import HomeFileRefused, read_home_file
    from cci_builtin_plugins.tools import settings_files

    try:
        data = read_home_file(container, path, MAX_SETTINGS)
        return {} if data is None else settings_files.parse(path, data)
    except (ValueError, HomeFileRefused):  # the write after it says what keeps it from the file, if anything
        return {}
