"""What the session commands share: the session object of the invocation, the choice of containers, the question."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import click

from cci_core.cli.state import get_state
from cci_core.errors import CciError, NotFoundError, UsageError

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.driver import ContainerInfo
    from cci_core.session import DetachedEnd, SessionManager
    from cci_core.session_record import SessionRecord
    from cci_core.warm_pool import PoolTarget


def manager_for(ctx: click.Context) -> SessionManager:
    """The invocation's session manager (loads config, plugins and driver)."""
    from cci_core.cli.state import warn
    from cci_core.session import SessionManager
    from cci_core.session_store import SessionStore

    state = get_state(ctx)
    try:
        SessionStore().tidy()  # what killed saves left behind
    except OSError as exc:
        warn(f"could not tidy ~/.cci: {exc}")
    manager = SessionManager(state.config, state.driver, state.plugins, warn=warn)
    manager.detached_end = _detached_end_starter(state.config)  # an end with detach goes on after cci returns
    manager.refill_pool = partial(_fill_pool, state.config)  # and so does the refill of a warm pool
    return manager


def _fill_pool(config: Config, pool: PoolTarget) -> None:
    from cci_core.cli.pool_fill import start

    start(config, pool)


def _detached_end_starter(config: Config) -> Callable[[str, bool | None], DetachedEnd]:
    """Starts :mod:`cci_core.cli.detached_end`'s process (imported then: most commands never end a session)."""
    def start(name: str, delete: bool | None) -> DetachedEnd:
        from cci_core.cli.detached_end import DetachedEndProcess

        return DetachedEndProcess(config, name, delete)

    return start


def check_network_policy(ctx: click.Context) -> None:
    """Refuse an unknown or misconfigured network mode, or ``[secrets]`` it cannot pass, before anything is launched."""
    from cci_core.networking import policy_for

    from cci_core.secrets import check_secrets

    state = get_state(ctx)
    policy = policy_for(state.config, state.plugins.registries)
    check_secrets(state.config, state.plugins.registries.secret_specs(), policy)


def select(containers: Sequence[ContainerInfo], names: Sequence[str], everything: bool) -> list[ContainerInfo]:
    """The session containers named (or all of them), checked before anything is done.

    Unknown names and containers cci does not own are refused, so a typo never
    stops or deletes anything.
    """
    from cci_core.session_record import is_session

    if everything and names:
        raise UsageError("give container names or --all, not both")
    if not everything and not names:
        raise UsageError("name at least one container, or use --all", hint="see 'cci list'")
    ours = {info.name: info for info in containers if is_session(info.labels)}
    if everything:
        return list(ours.values())
    known = {info.name for info in containers}
    for name in names:
        if name not in known:
            raise NotFoundError(f"no container named {name!r}", hint="see 'cci list'")
        if name not in ours:
            raise UsageError(f"{name} is not a cci session container; cci leaves it alone",
                             hint="use 'cci container' commands or incus for it")
    return [ours[name] for name in dict.fromkeys(names)]


def running_session(manager: SessionManager, name: str | None, workspace: str, *, verb: str,
                    what: str) -> tuple[ContainerInfo, SessionRecord]:
    """:func:`pick_running`'s session and its record, one line when its state is not running (``what``: what only a
    running session's can be, e.g. "session can be saved")."""
    from cci_core.session_record import SessionRecord, State

    info = pick_running(manager, name, workspace, verb=verb)
    record = SessionRecord.from_labels(info.labels)
    if record.state is not State.RUNNING:
        raise UsageError(f"{info.name} is {record.state.value if record.state else 'not running'}: only a running "
                         f"{what}", hint="see 'cci list'")
    return info, record


def pick_running(manager: SessionManager, name: str | None, workspace: str, *, verb: str) -> ContainerInfo:
    """The running session ``name``, or else this workspace's; when it has several, the user is asked (``verb``:
    "Attach to"), and without a terminal to ask on, told to name one."""
    from cci_core.session_record import SessionRecord

    running = [info for info in manager.current() if info.status == "running"]
    if name:
        for info in running:
            if info.name == name:
                return info
        if manager.driver.exists(name):
            raise UsageError(f"{name} is not a running cci session", hint="see 'cci list'")
        raise UsageError(f"no container named {name!r}", hint="see 'cci list'")
    ours = [(info, record) for info in running
            if (record := SessionRecord.from_labels(info.labels)).workspace == workspace]
    if not ours:
        raise UsageError("no running session for this workspace", hint="start one with 'cci shell'")
    if len(ours) == 1:
        return ours[0][0]
    if not sys.stdin.isatty():
        raise UsageError(f"this workspace has {len(ours)} running sessions: "
                         f"{', '.join(info.name for info, _record in ours)}", hint="name one")
    for number, (info, record) in enumerate(ours, start=1):
        click.echo(f"{number}) {info.name} (slot {record.slot if record.slot is not None else '?'}, "
                   f"{record.mode.value if record.mode else None})")
    choice = click.prompt(verb, type=click.IntRange(1, len(ours)), default=1)
    return ours[choice - 1][0]


def confirm(question: str, force: bool) -> None:
    """Ask before a bulk action unless ``--force``; without a terminal to ask on, refuse."""
    if force:
        return
    if not sys.stdin.isatty():
        raise CciError(f"{question} needs confirmation: nothing was done", hint="add --force to skip the question")
    if not click.confirm(question, default=False):
        raise CciError("nothing was done")
