"""The session lifecycle: open (launch or reuse), attach, save, end (save, then delete unless persistent), recovery.

:class:`SessionManager` is the one session object every session command goes
through (``shell``, ``attach``, ``run``, ``shutdown``, ``kill``, ``clean``, ``list``,
``tmux``). State lives in the container's own labels (``user.cci.*``, read and
written as a :class:`~cci_core.session_record.SessionRecord`), so any cci process
can finish what another started (see ``docs/lifecycle.md``)::

    launching --started--> running --stopped: poweroff inside, incus stop--+
        |                     |                                          v
        |                     +--cci shutdown / cci kill---------------> ending --save--> deleted (ephemeral)
        +--launch failed: deleted by the launcher                          |            +--> saved (persistent)
                                                                         (one process wins the move to ending)

A session that ends while no cci process watches it is finished by the next
cci command that calls :meth:`SessionManager.reconcile`.

Which hooks run when (the order is tested, tests/unit/test_lifecycle_hooks.py):

* launch: ``cci_pre_launch``, ``cci_environment``, ``cci_instance_config``, ``cci_mounts``,
  ``cci_pre_start(restart=False)``, (``cci_session_restore``), ``cci_inject_credentials``, (``cci_sandbox_brief``:
  a tool with a ``brief_path``), ``cci_post_launch``;
* reuse (a saved persistent container started again): the same, with ``cci_pre_start(restart=True)``
  and no ``cci_session_restore`` (the container holds its state);
* attach (``cci attach``, ``cci tmux``: a running session): ``cci_environment``; then
  ``cci_session_save`` (PERIODIC while attached, DETACH when the user leaves);
* end: ``cci_post_exit_save`` (a session that was running), ``cci_session_end``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from cci_core.background import InBackground
from cci_core.context import LaunchContext, Mount, SessionEvent
from cci_core.driver import Container, ContainerExistsError, ContainerInfo, ContainerSpec, Driver
from cci_core.errors import CciError, NotFoundError, PluginError, UsageError
from cci_core.layout import CONTAINER_HOME, CONTAINER_USER, WORKSPACE_PATH, state_dir
from cci_core.limits import arm_poweroff, deadline_of, ended_by_duration, overdue, summary
from cci_core.limits import labels_of as limit_labels
from cci_core.mount_checks import check_mountable, check_sources, check_storage_layout
from cci_core.session_readiness import Readiness, check_ready, not_ready, wait_ready
from cci_core.session_record import Kind, Mode, SessionRecord, State, is_session, launcher_id

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.network_policy import NetworkPlan
    from cci_core.networking import Attachment
    from cci_core.plugin_manager import Plugins
    from cci_core.secrets import Substitution
    from cci_core.session_attach import AttachOutcome
    from cci_core.command_io import CommandIO
    from cci_core.session_headless import Prompt
    from cci_core.tmux import TmuxSession
    from cci_core.workspace_sync import SyncReport
    from cci_core.tool import ToolAdapter
    from cci_core.warm_pool import PoolTarget



class LaunchRequest(NamedTuple):
    """What the user asked for; config values already merged in (image, persistence, environment)."""

    workspace: Path
    kind: str = Kind.SESSION
    slot: int | None = None
    storage: tuple[Path, ...] = ()
    resume_from: str | None = None
    persistent: bool | None = None  # None: [defaults] persistent
    readiness: Readiness = Readiness.WANTED  # what the launch does about the container's readiness


def _one_shot(readiness: Readiness) -> Readiness:
    """A one-shot's readiness: it waits unless told not to, and fails if the container is not ready by the deadline
    (a command started anyway would fail at random: see :mod:`cci_core.session_readiness`)."""
    return Readiness.SKIPPED if readiness == Readiness.SKIPPED else Readiness.REQUIRED


@dataclass(frozen=True)
class Cleanup:
    """What ``cci clean`` would do: finish the sessions that ended unwatched, put right the orphans."""

    ended: list[ContainerInfo]
    orphans: list[tuple[ContainerInfo, str]]  # and why each is one
    pool: list[tuple[ContainerInfo, str]] = field(default_factory=list)  # warm-pool containers to delete, and why

    def __len__(self) -> int:
        return len(self.ended) + len(self.orphans) + len(self.pool)

    def lines(self) -> list[str]:
        """One line per container: its name and what is done to it."""
        return ([f"{info.name}: {'stopped' if info.status == 'stopped' else 'past its time limit'}: save, then "
                 "delete unless persistent" for info in self.ended]
                + [f"{info.name}: {reason}" for info, reason in self.orphans]
                + [f"{info.name}: {reason}: delete" for info, reason in self.pool])


class Opened(NamedTuple):
    """A session :meth:`SessionManager.open` made ready: running, credentials in, booted as far as it needs."""

    container: Container
    ctx: LaunchContext
    reused: bool  # a saved persistent container started again (else: launched just now)

    @property
    def command(self) -> list[str] | None:
        """What the session's tmux runs: the tool, told whether it resumes (None: a shell)."""
        tool = self.ctx.tool
        resuming = self.reused or self.ctx.resume_from is not None
        return list(tool.command(self.ctx.session_id, resume=resuming)) if tool else None


class DetachedEnd(Protocol):
    """A process started to carry on the end of one session after this one returns (see
    :meth:`SessionManager.finish`): it waits until released (or until this process is gone), then calls
    :meth:`SessionManager.carry_on_end`."""

    #: its ``launcher`` label (see :func:`~cci_core.session_record.launcher_id`)
    launcher: str

    def release(self) -> None:
        """Let it carry on: the container has stopped."""


class _NotWarmable(Exception):
    """A warm container cannot serve this launch (deleted again): a container is made for it."""


#: the label by which a synced session's end says its copy came back before the stop (the detached rest of the end
#: does not read it again from the stopped container)
SYNCED_BACK = "synced_back"


def own_mounts(workspace: Path, storage: Sequence[Path], *, synced: bool = False) -> list[Mount]:
    """The mounts of a session's own: its workspace (unless it is ``synced``: copied in and back), and its storage
    directories."""
    return [*([] if synced else [Mount("workspace", workspace, WORKSPACE_PATH, shift=True)]),
            *(Mount(f"storage{index}", path, f"/storage/{path.name}", shift=True) for index, path in enumerate(storage))]


def _state(value: State) -> dict[str, str]:
    return {"state": value.value}


class SessionManager:
    """Opens, attaches to, saves and ends sessions for one invocation, through the driver and the plugin hooks."""

    def __init__(self, config: Config, driver: Driver, plugins: Plugins,
                 warn: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.driver = driver
        self.plugins = plugins
        #: where problems that do not stop the command are reported (None: raise them)
        self.warn = warn
        #: starts the detached process that carries on a :meth:`finish` with ``detach`` (None: none, ended here)
        self.detached_end: Callable[[str, bool | None], DetachedEnd] | None = None
        #: starts the detached process that fills the warm pool (None: the pool is not filled by this invocation)
        self.refill_pool: Callable[[PoolTarget], object] | None = None

    # -- open ----------------------------------------------------------------------------------------

    def open(self, request: LaunchRequest, *, latest: bool = False) -> Opened:
        """A running session for ``request``: this workspace's saved persistent container started again when
        there is one to reuse, else a new one.

        Sessions that ended unwatched are finished first (so that a session just ended is
        saved before it is looked for), and a resume waits for the workspace's ends at work in detached
        processes (a session that just ended is saved by one). ``request.resume_from`` (or, with ``latest``,
        the workspace's newest saved session) names the saved session to resume: this process is
        then the only one resuming it, and one still running elsewhere is refused.
        """
        from cci_core.slots import slot_claims

        claims = slot_claims(request.workspace)  # (before the listing: see claim_slot)
        listing = self.driver.list_containers()
        finished = set(self.reconcile(listing))
        if request.resume_from is not None or latest:
            from cci_core.ends_at_work import wait_for_end, workspace_ends

            for name in workspace_ends(listing, request.workspace):
                wait_for_end(self.driver, name)
        resume = self._session_to_resume(request, latest)
        request = request._replace(resume_from=resume)
        persistent = self.config.defaults.persistent if request.persistent is None else request.persistent
        with self._resuming(resume):
            if persistent and request.kind == Kind.SESSION:
                reused = self.reuse(request.workspace, request.slot, session=resume, storage=request.storage)
                if reused is not None:
                    return Opened(*reused, reused=True)
            # (the containers as listed before: see claim_slot)
            return Opened(*self.launch(request, [info for info in listing if info.name not in finished], claims),
                          reused=False)

    def _session_to_resume(self, request: LaunchRequest, latest: bool) -> str | None:
        if request.resume_from is None and not latest:
            return None
        from cci_core.session_store import SessionStore

        store, tool = SessionStore(), self.config.tool.name
        if latest:
            return store.latest(tool, request.workspace).id
        return store.find(tool, request.resume_from or "", request.workspace).id

    @contextlib.contextmanager
    def _resuming(self, session_id: str | None) -> Iterator[None]:
        """While opening: the only cci process resuming ``session_id``, which runs nowhere else."""
        if session_id is None:
            yield
            return
        from cci_core.session_store import SessionStore

        with SessionStore().resuming(self.config.tool.name, session_id):
            self._refuse_if_running(session_id)
            yield

    def _refuse_if_running(self, session_id: str) -> None:
        """Two containers must never run one session: its saves would overwrite each other."""
        for info in self.driver.list_containers():
            record = SessionRecord.from_labels(info.labels)
            if record.is_session and record.session == session_id and record.state is not State.SAVED:
                raise UsageError(f"session {session_id} is still running in {info.name}",
                                 hint=f"attach to it with 'cci attach {info.name}', "
                                      f"or end it with 'cci shutdown {info.name}'")

    def _prepare(self, workspace: Path, storage: Sequence[Path]) -> tuple[Path, tuple[Path, ...]]:
        """The workspace and storage directories as real paths, each checked to be mountable (or, where the driver
        cannot mount this host's paths, to be copied: the same checks, and no storage directories)."""
        workspace = workspace.resolve()
        check_mountable(workspace, sensitive=self.tool_directories)
        real = tuple(path.resolve() for path in storage)
        for path in real:
            check_mountable(path, "storage directory", self.tool_directories)
        check_storage_layout(workspace, real)
        if real and not self.driver.mounts_host_paths():
            raise UsageError(f"--storage mounts {real[0]} from this host, which the {self.driver.name} driver's "
                             "server cannot do (it is not this host)",
                             hint="put what the session needs into the workspace, which is copied in and back")
        return workspace, real

    # -- launch --------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest, listing: Sequence[ContainerInfo] | None = None,
               claims: int | None = None) -> tuple[Container, LaunchContext]:
        """Claim a slot, configure, start: a running container with credentials in place.

        An ephemeral launch without an explicit slot takes a container from the warm pool when
        ``[pool] size`` asks for one and one is ready (:mod:`cci_core.warm_pool`); the pool is made whole again
        in the background. ``listing`` and ``claims``: the containers, if just listed, and the slot lock's count
        read before (see :func:`~cci_core.slots.claim_slot`). On any failure after the claim, the container is
        deleted again: nothing half-made is left.
        """
        defaults = self.config.defaults
        tool = self._tool() if request.kind == Kind.SESSION else None
        workspace, storage = self._prepare(request.workspace, request.storage)
        attachment, substitutions = self.open_network(tool)
        persistent = defaults.persistent if request.persistent is None else request.persistent
        me = launcher_id()
        record = SessionRecord(
            kind=Kind(request.kind), workspace=str(workspace), tool=tool.name if tool else "",
            mode=Mode.PERSISTENT if persistent else Mode.EPHEMERAL, session=request.resume_from or str(uuid.uuid4()),
            state=State.LAUNCHING, launcher=me, network=attachment.policy, limits=summary(self.config),
            deadline=deadline_of(self.config), synced=None if self.driver.mounts_host_paths() else True,
        )
        pool = self._pool_target(attachment) if not persistent and not request.slot and not record.synced else None
        if pool is not None and listing is None:
            listing = self.driver.list_containers()

        def create(name: str, slot: int) -> Container:  # (made with its own mounts and network: see _configure)
            spec = ContainerSpec(name, defaults.image, labels=record.but(slot=slot).to_labels(),
                                 config=self.driver.base_config, limits=self.config.limits,
                                 mounts=own_mounts(workspace, storage, synced=bool(record.synced)),
                                 network=attachment.network)
            try:
                return self.driver.create(spec)
            except ContainerExistsError:
                raise  # another launch's: the next slot is tried
            except BaseException:  # Ctrl+C while Incus made it, say: it may exist all the same
                self._undo_create(name, me)
                raise

        from cci_core.slots import claim_slot

        started = (record, attachment, substitutions, tool, storage)
        warm: Container | None = None
        try:
            warm = self._take_warm(workspace, pool, record, listing or (), claims)
            if warm is not None:
                try:
                    return self._start_session(warm, request, *started, warm=True)
                except _NotWarmable:
                    pass  # (deleted again) a plugin's instance config needs a container made for it
            container = claim_slot(self.driver, workspace, create, slot=request.slot, listing=listing, claims=claims)
            return self._start_session(container, request, *started)
        finally:
            self._refill(pool, listing or (), took=warm is not None)

    def _start_session(self, container: Container, request: LaunchRequest, record: SessionRecord,
                       attachment: Attachment, substitutions: tuple[Substitution, ...], tool: ToolAdapter | None,
                       storage: tuple[Path, ...], *, warm: bool = False) -> tuple[Container, LaunchContext]:
        """The rest of :meth:`launch`, in the container just claimed (``warm``: taken from the pool, running)."""
        me = record.launcher or ""
        try:
            ctx = self.context(container.name, container.labels())
            ctx.storage = storage
            ctx.tool = tool
            ctx.resume_from = request.resume_from
            ctx.substitutions = substitutions
            ctx.network_policy, ctx.network_plan = attachment.policy, attachment.plan
            ctx.synced = bool(record.synced)
            # a warm one runs: the connection for its files opens while it is configured (see file_batch)
            with container.file_batch() if warm else contextlib.nullcontext():
                others = self._configure(container, ctx, attachment.network, warm=warm)
                self.plugins.hook.cci_pre_start(ctx=ctx, container=container, restart=False)
                self._start(container, warm=warm, others=others)
                # the readiness wait goes on while these write under the home (a warm one was ready when pooled)
                booted = InBackground(lambda: check_ready(container, self.config.readiness.timeout), "boot") \
                    if request.readiness != Readiness.SKIPPED and not warm else None
                with container.file_batch():
                    if request.resume_from:
                        self.plugins.hook.cci_session_restore(ctx=ctx, container=container)
                    with container.file_batch():
                        self.plugins.hook.cci_inject_credentials(ctx=ctx, container=container)
                        self._write_brief(ctx, container)
            self._started(container, me)  # (while the readiness wait goes on: a failure after it still undoes all)
            if booted is not None:
                self._settle_readiness(container, booted.result(), request.readiness)
            if ctx.synced:
                self.sync_in(container, ctx.workspace)
            if request.kind == Kind.SESSION:
                self._arm_deadline(container, record.deadline)
            self.plugins.hook.cci_post_launch(ctx=ctx, container=container)
        except BaseException:
            if self._reclaim(container, me, State.LAUNCHING):
                self.discard(container)
            raise
        return container, ctx

    # -- the warm pool (cci_core.warm_pool) ------------------------------------------------------------

    def _pool_target(self, attachment: Attachment) -> PoolTarget | None:
        """What this launch's warm containers are made for; None without a pool, or where there can be none."""
        if self.config.pool.size <= 0 or not self.driver.supports_pool:
            return None
        import os

        from cci_core.warm_pool import PoolTarget, pool_key

        image = self.config.defaults.image
        fingerprint = self.driver.image_fingerprint(image)
        if fingerprint is None:
            return None
        key = pool_key(self.driver, image, attachment.policy, attachment.network, summary(self.config), os.getuid())
        return PoolTarget(key, image, fingerprint, attachment.network, attachment.policy)

    def _take_warm(self, workspace: Path, pool: PoolTarget | None, record: SessionRecord,
                   listing: Sequence[ContainerInfo], claims: int | None) -> Container | None:
        if pool is None:
            return None
        from cci_core.warm_pool import take

        return take(self.driver, workspace, pool, lambda slot: record.but(slot=slot).to_labels(), listing, claims)

    def _refill(self, pool: PoolTarget | None, listing: Sequence[ContainerInfo], *, took: bool) -> None:
        """Have the pool made whole again in the background (containers warmed, or a surplus removed when the size
        was lowered), unless this launch leaves it whole (``listing``: before it ``took`` one, or none)."""
        from cci_core.warm_pool import pooled

        if pool is None or self.refill_pool is None or len(pooled(listing, pool)) - int(took) == self.config.pool.size:
            return
        try:
            self.refill_pool(pool)
        except OSError as exc:
            self._report(f"could not start filling the warm pool: {exc}")

    def fill_pool(self, pool: PoolTarget) -> None:
        """Make the pool of ``pool`` whole: warm containers until ``[pool] size`` are ready or warming, and remove
        ready ones beyond it and stale ones of its key (stopped by a reboot, say). One process per key at a time;
        the others wait for it, then look again."""
        from cci_core.host_lock import held
        from cci_core.layout import state_dir
        from cci_core.warm_pool import pooled, remove, stale, surplus, warm_one

        with held(state_dir() / "pool" / pool.key):
            listing = self.driver.list_containers()
            for info, _why in stale(self.driver, listing):
                if info.labels.get("pool-key") == pool.key:
                    remove(self.driver, info)
            while True:
                for info in surplus(listing, pool, self.config.pool.size):
                    remove(self.driver, info)
                if len(pooled(listing, pool)) >= self.config.pool.size:
                    return
                warm_one(self.driver, pool, lambda container: wait_ready(container, self.config.readiness.timeout))
                listing = self.driver.list_containers()

    def _tool(self, name: str | None = None) -> ToolAdapter:
        """The configured tool (or the one named, e.g. by a container's label), ready to use."""
        from cci_core.registry import make_tool

        return make_tool(self.plugins.registries, self.config, name)

    def attach_network(self) -> Attachment:
        """Have the driver enforce the configured network policy; its notes go to :attr:`warn`."""
        return self.open_network()[0]

    def open_network(self, tool: ToolAdapter | None = None) -> tuple[Attachment, tuple[Substitution, ...]]:
        """:meth:`attach_network`, with the launch's secrets (``[secrets]``, and ``tool``'s credential files) passed
        by placeholder: checked before the driver makes anything, then routed through the plan's proxy."""
        import os

        from cci_core.networking import attach
        from cci_core.secrets import collect_secrets

        found: list[Substitution] = []
        known = self.plugins.registries.secret_specs()

        def secrets(plan: NetworkPlan | None) -> None:
            found.extend(collect_secrets(self.config, known, plan, os.environ, tool, self._report))

        attachment = attach(self.config, self.plugins.registries, self.driver, check=secrets)
        for note in attachment.plan.notes if attachment.plan else ():
            self._report(f"network policy {attachment.policy}: {note}")
        if found and attachment.network is not None:
            self.driver.route_secrets(attachment.network, found)
        return attachment, tuple(found)

    def refresh_networks(self, report: Callable[[str], None] | None = None) -> None:
        """Refresh the network plans in use whose interval has passed; a failure is a warning (to ``report``, else
        :attr:`warn`), never fatal."""
        from cci_core.networking import refresh

        report = report or self._report
        try:
            for refreshed in refresh(self.driver, self.plugins.registries):
                for note in refreshed.notes:
                    report(f"network {refreshed.network}: {note}")
        except CciError as exc:
            report(f"could not refresh network policies: {exc}")

    def _report(self, message: str) -> None:
        if self.warn is not None:
            self.warn(message)

    def wait_ready(self, container: Container, readiness: Readiness = Readiness.WANTED) -> None:
        """Wait (up to ``[readiness] timeout``) for ``container`` to be ready, as ``readiness`` says: see
        :mod:`cci_core.session_readiness`."""
        if readiness != Readiness.SKIPPED:
            self._settle_readiness(container, check_ready(container, self.config.readiness.timeout), readiness)

    def _settle_readiness(self, container: Container, missing: str | None, readiness: Readiness) -> None:
        """What was still ``missing`` when the readiness wait ended: an error where it is required, else a warning."""
        if missing is None:
            return
        error = not_ready(container.name, self.config.readiness.timeout, missing)
        if readiness == Readiness.REQUIRED:
            raise error
        self._report(f"{error.message}; going on without it")

    def _configure(self, container: Container, ctx: LaunchContext, network: str | None, *,
                   warm: bool = False) -> set[Path] | None:
        """Run the pre-launch hooks and apply what they contribute (before the container starts).

        A saved container is configured again the same way: the devices named here
        replace those of the same name (the workspace, ``storage<N>``, the plugins'). A ``warm``
        one runs already: a plugin's instance config, which might need a start, makes it unusable
        (:class:`_NotWarmable`), and its mounts are checked before they go in: then the other sessions'
        workspaces as they were listed for that check are returned.
        """
        hook = self.plugins.hook
        hook.cci_pre_launch(ctx=ctx)
        self._add_environment(ctx)
        named = self.config.secrets.env
        ctx.environment.update({secret.name: secret.placeholder for secret in ctx.substitutions
                                if secret.name in named})  # (over any real value set elsewhere)
        base = self.driver.base_config
        config = dict(base)
        for contribution in hook.cci_instance_config(ctx=ctx):
            for key, value in (contribution or {}).items():
                if key in config and config[key] != value and key not in base:
                    raise PluginError(f"two plugins set {key} to different values ({config[key]!r}, {value!r})")
                config[key] = value
        if warm and config != dict(base):
            raise _NotWarmable
        mounts = own_mounts(ctx.workspace, ctx.storage, synced=ctx.synced)
        for contribution in hook.cci_mounts(ctx=ctx):
            mounts.extend(contribution or ())
        devices = [mount.device for mount in mounts]
        duplicates = sorted({device for device in devices if devices.count(device) > 1})
        if duplicates:
            raise PluginError(f"two mounts use the device name(s) {', '.join(duplicates)}")
        others = None
        if warm:  # mounted as soon as configured: checked before, as before a start
            others = self.other_workspaces(container.name)
            check_sources(mounts, container.name, others, self.tool_directories)
        container.configure(config, mounts, network)
        return others

    def _add_environment(self, ctx: LaunchContext) -> None:
        for contribution in self.plugins.hook.cci_environment(ctx=ctx):
            ctx.environment.update(contribution or {})

    @staticmethod
    def discard(container: Container) -> None:
        """Delete a container at once, without saving (a failed launch, an orphan, a pool container); never raises."""
        try:
            if container.status() != "stopped":
                container.stop(force=True)
            container.delete()
        except CciError:
            pass

    # -- reuse ---------------------------------------------------------------------------------------

    def reuse(self, workspace: Path, slot: int | None = None, session: str | None = None,
              storage: Sequence[Path] = ()) -> tuple[Container, LaunchContext] | None:
        """Start this workspace's saved persistent container (the given slot or session, or the lowest slot).

        It goes through the hooks a launch does (configured again: this invocation's
        environment, instance config, mounts with ``storage``, network policy), with
        ``cci_pre_start(restart=True)``. A mount replaces the earlier one of its device
        name; the others stay (a storage directory of an earlier start that ``storage``
        does not replace, checked again before the start; ``storage`` in, around or on one
        of those is refused). A failure puts it back, stopped and saved.
        """
        workspace, storage = self._prepare(workspace, storage)
        saved = sorted(
            ((info, record) for info in self.driver.list_containers()
             if (record := SessionRecord.from_labels(info.labels)).is_session and record.kind is Kind.SESSION
             and record.workspace == str(workspace) and record.state is State.SAVED
             and (not slot or record.slot == slot) and (not session or record.session == session)),
            key=lambda pair: pair[1].slot or 0,
        )
        from cci_core.snapshots import snapshot_on_start

        for info, record in saved:
            container = self.driver.get(info.name)
            me = launcher_id()
            if not container.compare_and_set_labels(_state(State.SAVED), {"state": State.LAUNCHING.value,
                                                                          "launcher": me,
                                                                          "previous": State.SAVED.value}):
                continue  # another cci process took it
            try:
                limits = limit_labels(self.config)
                container.set_labels(limits)
                snapshot_on_start(container, self.config.defaults, self._report)
                ctx = self.context(info.name, container.labels())
                ctx.storage = storage
                if storage:
                    self._check_kept_storage(container, workspace, storage)
                attachment, ctx.substitutions = self.open_network(ctx.tool)
                self._configure(container, ctx, attachment.network)
                ctx.network_policy = self._note_network(container, record.network or "", attachment)
                ctx.network_plan = attachment.plan if ctx.network_policy == attachment.policy else None
                self.plugins.hook.cci_pre_start(ctx=ctx, container=container, restart=True)
                self._start(container)
                self.plugins.hook.cci_inject_credentials(ctx=ctx, container=container)
                self._write_brief(ctx, container)
                self.wait_ready(container)
                if ctx.synced:
                    self.sync_in(container, ctx.workspace)
                self._arm_deadline(container, SessionRecord.from_labels(limits).deadline)
                self._started(container, me)
                self.plugins.hook.cci_post_launch(ctx=ctx, container=container)
            except BaseException:
                try:  # back to how it was, stopped and saved, unless another cci process is ending it
                    if self._reclaim(container, me, State.SAVED):
                        self._put_back(container)
                except CciError:
                    pass
                raise
            return container, ctx
        return None

    @staticmethod
    def _check_kept_storage(container: Container, workspace: Path, storage: Sequence[Path]) -> None:
        """Refuse ``storage`` that lies in, around or on a storage directory the reuse keeps (one of an earlier
        start that ``storage`` does not replace), as a launch refuses it among its own (:func:`check_storage_layout`)."""
        replaced = {f"storage{index}" for index in range(len(storage))}
        kept = [mount.source for mount in container.host_mounts()
                if mount.device.startswith("storage") and mount.device not in replaced]
        check_storage_layout(workspace, (*storage, *kept))

    def _note_network(self, container: Container, previous: str, attachment: Attachment) -> str:
        """Record the policy a saved container is under now (its plan made afresh), or say why it keeps its own;
        the policy it is under."""
        if attachment.network is None and previous and previous != attachment.policy:
            self._report(f"{container.name} keeps its {previous!r} network: a saved container cannot go back "
                         f"to {attachment.policy!r}; start a new session for that")
            return previous
        container.set_labels({"network": attachment.policy})
        return attachment.policy

    def _write_brief(self, ctx: LaunchContext, container: Container) -> None:
        """The sandbox brief, where the tool reads it (:mod:`cci_core.sandbox_brief`); a problem is a warning."""
        from cci_core.sandbox_brief import write_brief

        write_brief(self.plugins, ctx, container, self._report)

    def _arm_deadline(self, container: Container, deadline: int | None) -> None:
        """The container powers itself off at ``deadline`` (for when no cci process watches it: the next cci command
        then ends the session); if it cannot, cci commands alone end it, and the user is told."""
        if deadline is None:
            return
        problem = arm_poweroff(container, deadline)
        if problem:
            self._report(f"{container.name} has no timer inside to power it off at its time limit ({problem}); "
                         "it ends when cci sees it past its limit (the attached cci, or any cci command)")

    def _start(self, container: Container, *, warm: bool = False, others: set[Path] | None = None) -> None:
        """Start, once its mounts still lead where cci resolved them, none in another session's workspace (see
        :func:`check_sources`; ``others``: those workspaces if just listed); a ``warm`` one runs already: its
        mounts are checked as after a start."""
        check_sources(container.host_mounts(), container.name,
                      self.other_workspaces(container.name) if others is None else others, self.tool_directories)
        if warm:
            container.start_warm()
        else:
            container.start()

    @cached_property
    def tool_directories(self) -> tuple[str, ...]:
        """The directories of the home holding the installed tools' credentials: never mounted (see
        :func:`~cci_core.mount_checks.check_mountable`)."""
        from cci_core.mount_checks import tool_directories

        tools = []
        for name in self.plugins.registries.tools.names():
            try:
                tools.append(self.plugins.registries.tools.get(name))
            except CciError:
                pass  # a tool that cannot be loaded cannot run either (using it is the error)
        return tool_directories(tools)

    def other_workspaces(self, name: str) -> set[Path]:
        """The workspaces of the sessions other than container ``name``: their agents can change what is in them."""
        return {record.workspace_path for info in self.driver.list_containers()
                if (record := SessionRecord.from_labels(info.labels)).is_session and info.name != name}

    @staticmethod
    def _started(container: Container, me: str) -> None:
        """LAUNCHING -> RUNNING, unless another cci process took the container over meanwhile (to end it)."""
        if not container.compare_and_set_labels({"state": State.LAUNCHING.value, "launcher": me},
                                                _state(State.RUNNING)):
            raise CciError(f"{container.name} was ended by another cci command while it started")

    @staticmethod
    def _reclaim(container: Container, me: str, previous: State) -> bool:
        """Take back a container this process launched (to undo the launch): False if another cci process
        took it over meanwhile. When Incus cannot tell, it counts as ours: nothing else would undo it.

        ``previous`` tells :meth:`recover` what to do if the undoing is cut short: a new
        launch (``launching``) is deleted, never saved; a restart (``saved``) is put back.
        """
        try:
            return any(container.compare_and_set_labels({"state": state.value, "launcher": me},
                                                        {"state": State.ENDING.value, "previous": previous.value})
                       for state in (State.LAUNCHING, State.RUNNING))
        except CciError:
            return True

    def _undo_create(self, name: str, me: str) -> None:
        """Delete container ``name`` if this process made it after all; never raises (the first error matters)."""
        try:
            container = self.driver.get(name)
        except CciError:
            return  # not made
        if self._reclaim(container, me, State.LAUNCHING):
            self.discard(container)

    @staticmethod
    def _put_back(container: Container) -> None:
        """A persistent container whose restart failed: stopped, and saved as it was."""
        if container.status() != "stopped":
            container.stop(force=True)
        container.set_labels(_state(State.SAVED))

    # -- contexts ------------------------------------------------------------------------------------

    def context(self, name: str, labels: Mapping[str, str]) -> LaunchContext:
        """Rebuild a session's context from its container labels (for hooks run by a later process).

        Its environment is this invocation's ``[defaults] environment`` only for a
        container of this invocation's workspace: what one project's config names
        (its tokens, say) never goes into another project's container.
        """
        record = SessionRecord.from_labels(labels)
        workspace = record.workspace_path
        return LaunchContext(
            config=self.config,
            workspace=workspace,
            container_name=name,
            slot=record.slot or 0,
            session_id=record.session or "",
            persistent=record.persistent,
            image=self.config.defaults.image,
            environment=dict(self.config.defaults.environment) if workspace == self.config.workspace else {},
            tool=self._tool(record.tool) if record.tool else None,
            network_policy=record.network or "",
            synced=bool(record.synced),
        )

    def running(self, name: str, labels: Mapping[str, str] | None = None) -> tuple[Container, LaunchContext]:
        """A running session to attach to or drive: its container and its context with the plugins' environment
        (``cci_environment``; nothing is checked or configured again: it runs)."""
        container = self.driver.get(name)
        labels = container.labels() if labels is None else labels
        if not is_session(labels):
            raise UsageError(f"{name} is not a cci session container")
        ctx = self.context(name, labels)
        self._add_environment(ctx)
        return container, ctx

    def user_environment(self, ctx: LaunchContext) -> dict[str, str]:
        """The environment of processes cci starts as the container user: only what was named."""
        return {
            "HOME": CONTAINER_HOME,
            "USER": CONTAINER_USER,
            "LOGNAME": CONTAINER_USER,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            **ctx.environment,
        }

    def tmux(self, container: Container, ctx: LaunchContext) -> TmuxSession:
        """The session's tmux (:class:`~cci_core.tmux.TmuxSession`), driven as the container user."""
        from cci_core.tmux import TmuxSession

        return TmuxSession(container, self.driver.container_uid, self.user_environment(ctx))

    # -- attached ------------------------------------------------------------------------------------

    def attach(self, container: Container, ctx: LaunchContext, *, command: Sequence[str] | None = None,
               fresh: bool = False, say: Callable[[str], None] | None = None) -> AttachOutcome:
        """Attach the user's terminal to the session's tmux; afterwards end the session if its container stopped,
        else save it. See :func:`cci_core.session_attach.attach_and_settle`."""
        from cci_core.session_attach import attach_and_settle

        return attach_and_settle(self, container, ctx, command=command, fresh=fresh, say=say)

    def save(self, ctx: LaunchContext, container: Container, event: SessionEvent) -> None:
        """Save a live session's state (``cci_session_save``): at detach, periodically, or on request; a synced
        workspace is brought back first."""
        if ctx.synced:
            self.sync_back(container, ctx.workspace)
        self.plugins.hook.cci_session_save(ctx=ctx, container=container, event=event)

    # -- a workspace copied, not mounted (cci_core.workspace_sync) ------------------------------------------------

    def sync_in(self, container: Container, workspace: Path, *, again: bool = False) -> None:
        """Copy ``workspace`` into the running container, as the container user's; what was copied is the manifest
        the copies back compare with. ``again`` (``cci sync --to-container``): into a copy that may have changed,
        which is brought back first (:meth:`sync_back`), so that nothing of it is lost; then what the host removed
        since is removed there."""
        if again:
            self.sync_back(container, workspace)
        from cci_core.host_lock import held
        from cci_core.workspace_sync import (Excludes, load_manifest, manifest_path, save_manifest, sync_limits,
                                             sync_to_container)

        container.exec(["true"])  # (the driver waits until it can run commands: a start may still be settling)
        manifest = manifest_path(state_dir(), container.name)
        with held(manifest.with_suffix(".lock")):  # (one copy of a container's workspace at a time, either way)
            if container.labels().get(SYNCED_BACK):
                container.set_labels({SYNCED_BACK: ""})  # (a persistent one, started again)
            records = sync_to_container(container, workspace, WORKSPACE_PATH, uid=self.driver.container_uid,
                                        excludes=Excludes(self.config.sync.exclude), limits=sync_limits(self.config),
                                        previous=load_manifest(manifest) if again else None)
            save_manifest(manifest, records)

    def sync_back(self, container: Container, workspace: Path) -> SyncReport:
        """Bring the container's copy of ``workspace`` back to the host (see :mod:`cci_core.workspace_sync`),
        telling the user what they should know (both sides changed a file; what was left out); its report."""
        from cci_core.host_lock import held
        from cci_core.workspace_sync import (Excludes, describe, load_manifest, manifest_path, protected_patterns,
                                             save_manifest, sync_limits, sync_to_host)

        manifest = manifest_path(state_dir(), container.name)
        excludes = Excludes([*self.config.sync.exclude, *protected_patterns(self.config)])
        with held(manifest.with_suffix(".lock")):
            report, records = sync_to_host(container, WORKSPACE_PATH, workspace, load_manifest(manifest),
                                           excludes=excludes, limits=sync_limits(self.config))
            save_manifest(manifest, records)
        for line in describe(report):
            self._report(f"{container.name}: {line}")
        return report

    # -- ending --------------------------------------------------------------------------------------

    def end(self, name: str, *, force: bool = False, timeout: int = 60, delete: bool | None = None) -> bool:
        """End session ``name`` from the host (``cci shutdown``; ``cci kill``: ``force`` and ``delete``); False
        when another cci process is ending it. See :meth:`finish`."""
        return self.finish(self.driver.get(name), force=force, timeout=timeout, delete=delete)

    def finish(self, container: Container, *, force: bool = False, timeout: int = 60,
               delete: bool | None = None, detach: bool = False) -> bool:
        """End a session: stop it if it runs, save it, then delete it unless it is persistent.

        The first process to move the session to ``ending`` does the work; any
        other returns False at once. ``delete`` overrides the session's mode
        (``cci kill`` deletes persistent containers too).

        Once the container has stopped the session has ended, whatever becomes of its
        save, and the ``cci_session_end`` hooks run (the workspace guard's report and
        setuid clearing). A save that fails (Incus unreachable, the host's disk full,
        the tool's plugin gone: never what the container holds) keeps the container
        for the next command to retry, and raises; with ``delete`` (``cci kill``) the
        session is ended all the same, with a warning, and its last save stays.

        With ``detach`` (``cci run``, an ephemeral session's end) and a :attr:`detached_end`, this process returns
        once the container's
        processes are dead (:meth:`~cci_core.driver.Container.kill`, with ``force``) and the ``cci_session_end``
        hooks have reported (nothing in the container can act any more): the rest of the stop, the save and
        the delete are left to a detached process (see :meth:`carry_on_end`), which
        holds the session (``ending``) from the start, so that an end it does not complete is recovered
        by the next command's :meth:`reconcile`.
        """
        labels = container.labels()
        record = SessionRecord.from_labels(labels)
        state = record.state
        if state not in (State.RUNNING, State.SAVED, State.LAUNCHING):
            return False
        assert state is not None
        synced = bool(record.synced) and state is State.RUNNING  # (its copy comes back before this returns)
        helper = self._detached_end(container.name, delete) if detach else None
        ending = {"state": State.ENDING.value, "launcher": helper.launcher if helper else launcher_id(),
                  "previous": state.value}
        if not container.compare_and_set_labels(_state(state), ending):
            if helper is not None:
                helper.release()  # it finds the session is not its own, and leaves
            return False
        # handed back when the session is not ended now (to its own cci process, if it has one that still runs:
        # a 'cci run'), so that a later command retries
        handed_back = record.owner()
        synced_back = False
        try:
            if synced and container.status() == "running":  # read while it runs: one stream, not a walk
                synced_back = self._sync_back_at_end(container, record.workspace_path, delete)
            if synced_back and helper is not None:
                # nothing in it reaches the host any more (no mount): the whole stop is left to the detached end,
                # told not to copy it back again
                container.set_labels({SYNCED_BACK: "1"})
            elif container.status() != "stopped":
                self._stop(container, force=force, timeout=timeout, kill=helper is not None)
        except BaseException:
            container.set_labels(handed_back)  # not stopped, or interrupted: nothing has ended
            raise
        if helper is not None:
            try:
                ctx = self._ending_context(container.name, labels)[0]
                self.plugins.hook.cci_session_end(ctx=ctx, deleted=(not ctx.persistent) if delete is None else delete,
                                                  report=self._report)
            finally:
                helper.release()
            return True
        return self._complete(container, labels, state, handed_back, delete, synced_back=synced_back)

    def _sync_back_at_end(self, container: Container, workspace: Path, delete: bool | None) -> bool:
        """The copy back at a synced session's end; one that fails keeps the session (raised), but for a ``delete``
        (``cci kill``), which goes on with a warning."""
        try:
            self.sync_back(container, workspace)
        except CciError as exc:
            if not delete:
                raise
            self._report(f"the workspace copy in {container.name} could not be brought back ({exc}); the session "
                         "is ended all the same")
        return True

    def _detached_end(self, name: str, delete: bool | None) -> DetachedEnd | None:
        """The detached process for :meth:`finish`'s ``detach``; None when there is none, or it could not start
        (no process left under the user's limit, say): then the end is done here, as without ``detach``."""
        if self.detached_end is None:
            return None
        try:
            return self.detached_end(name, delete)
        except OSError as exc:
            self._report(f"ending {name} here: could not start a process to end it after cci returns ({exc})")
            self.detached_end = None  # (nor for the next: what tells the user how it ended knows it was here)
            return None

    def carry_on_end(self, name: str, delete: bool | None = None) -> bool:
        """In the detached process a :meth:`finish` with ``detach`` started: end session ``name`` (stopped if it
        still runs: its cci process may have died first), save it, delete it; False when it is not this
        process's to end (that ``finish`` lost the move to ``ending``)."""
        container = self.driver.get(name)
        labels = container.labels()
        record = SessionRecord.from_labels(labels)
        me = launcher_id()
        if record.state is not State.ENDING or record.launcher != me:
            return False
        previous = record.previous or State.RUNNING
        handed_back = {"state": previous.value, "launcher": me}  # a dead launcher: the next command retries
        try:
            if container.status() != "stopped" and (labels.get(SYNCED_BACK) == "1" or not container.wait_stopped(60)):
                self._stop(container, force=True, timeout=0)  # (the killed one's stop goes on: waited for)
        except BaseException:
            container.set_labels(handed_back)
            raise
        return self._complete(container, labels, previous, handed_back, delete,
                              synced_back=labels.get(SYNCED_BACK) == "1")

    def _ending_context(self, name: str, labels: Mapping[str, str]) -> tuple[LaunchContext, CciError | None]:
        """The context of a session that ends; when its tool's plugin is gone, the context without the tool, and why."""
        try:
            return self.context(name, labels), None
        except CciError as exc:  # the tool's plugin is gone: nothing can save its state
            return self.context(name, SessionRecord.from_labels(labels).but(tool="").to_labels()), exc

    def _complete(self, container: Container, labels: Mapping[str, str], state: State,
                  handed_back: Mapping[str, str], delete: bool | None, *, synced_back: bool = False) -> bool:
        """The rest of :meth:`finish` once the container has stopped: the save (of a session that was running),
        the delete (or the mark ``saved``), the ``cci_session_end`` hooks."""
        try:
            ctx, failure = self._ending_context(container.name, labels)
            failure = failure if state is State.RUNNING else None
            # a saved session was saved when it ended; a launch never ran
            if failure is None and state is State.RUNNING:
                try:
                    if ctx.synced and not synced_back:
                        self.sync_back(container, ctx.workspace)
                    self.plugins.hook.cci_post_exit_save(ctx=ctx, container=container)
                except CciError as exc:
                    failure = exc
        except BaseException:
            container.set_labels(handed_back)  # interrupted: nothing has ended
            raise
        if failure is not None and not delete:
            container.set_labels(handed_back)  # nothing is deleted unsaved
            self.plugins.hook.cci_session_end(ctx=ctx, deleted=False, report=self._report)
            raise failure
        if failure is not None:
            self._report(f"the session in {container.name} could not be saved ({failure}); it is ended all the "
                         "same, its last save is kept")
        deleted = (not ctx.persistent) if delete is None else delete
        if deleted:
            container.delete()
            if ctx.synced:
                from cci_core.workspace_sync import manifest_path

                for leftover in (manifest := manifest_path(state_dir(), container.name)), manifest.with_suffix(".lock"):
                    leftover.unlink(missing_ok=True)
        else:
            container.set_labels(_state(State.SAVED))
        self.plugins.hook.cci_session_end(ctx=ctx, deleted=deleted, report=self._report)
        return True

    @staticmethod
    def _stop(container: Container, *, force: bool, timeout: int, kill: bool = False) -> None:
        """Stop ``container`` (forced: at once; else within ``timeout`` seconds, or then forced); with ``kill`` and
        ``force``, return once its processes are dead (:meth:`~cci_core.driver.Container.kill`)."""
        if not force:
            try:
                container.stop(timeout=timeout)
                return
            except CciError:
                pass  # did not stop in time: force it
        try:
            container.kill() if kill else container.stop(force=True)
        except CciError:
            if container.status() != "stopped":
                raise  # (stopped meanwhile: a stop already under way, of a killed container, say)

    def recover(self, container: Container) -> None:
        """Put right a container whose cci process died (see ``cci clean``).

        An end it interrupted is done again (saved first); a persistent container it
        was restarting or ending without a save to make is stopped and saved as it was;
        any other launch is deleted.
        """
        record = SessionRecord.from_labels(container.labels())
        owner = record.owner()
        if record.state is State.ENDING and record.previous in (State.RUNNING, None):
            if container.compare_and_set_labels(owner, _state(State.RUNNING)):  # (a 'cci run''s end is forced)
                self.finish(self.driver.get(container.name), force=record.kind is Kind.RUN)
        elif not container.compare_and_set_labels(owner, {"state": State.ENDING.value, "launcher": launcher_id()}):
            return  # another cci process acted on it meanwhile
        elif record.previous is State.SAVED or (record.state is State.ENDING and record.previous is not State.LAUNCHING
                                                and record.persistent):
            self._put_back(container)
        else:
            self.discard(container)

    def cleanup(self, *, pool: bool = False) -> Cleanup:
        """The plan of ``cci clean``: the sessions that ended unwatched, the orphans (see
        :meth:`SessionRecord.orphaned`) and the stale warm-pool containers (with ``pool``: all of this user's not
        taken); never a saved persistent container nor one cci did not make."""
        from cci_core.warm_pool import is_mine, stale

        listing = self.driver.list_containers()
        ended = self.ended(listing)
        orphans = [(info, reason) for info in listing
                   if ((record := SessionRecord.from_labels(info.labels)).is_session or record.kind is Kind.BUILD)
                   and info not in ended and (reason := record.orphaned())]
        pooled = list(stale(self.driver, listing))
        if pool:
            named = {info.name for info, _reason in pooled}
            pooled += [(info, "a warm-pool container") for info in listing
                       if is_mine(info.labels) and info.name not in named]
        return Cleanup(ended, orphans, pooled)

    def clean(self, plan: Cleanup) -> None:
        """Carry out :meth:`cleanup`'s plan; an orphan another cci process has acted on since is left alone."""
        for info in plan.ended:
            self.finish(self.driver.get(info.name))
        for info, _reason in plan.orphans:
            container = self.driver.get(info.name)
            if SessionRecord.from_labels(container.labels()).orphaned():  # still: checked again at the last moment
                self.recover(container)
        from cci_core.warm_pool import remove

        for info, _reason in plan.pool:
            remove(self.driver, info)  # (unless a launch took it meanwhile)

    def run(self, request: LaunchRequest, command: Sequence[str], *, stdout: Any = None, stderr: Any = None,
            say: Callable[[str], None] | None = None, io: CommandIO | None = None) -> int:
        """``cci run``: ``command`` as the container user in a fresh container of ``request``'s workspace, which
        is ended and deleted afterwards whatever happens (by a detached process once it has stopped, when there
        is a :attr:`detached_end`); its exit code (124 when the session duration limit stopped it: ``say`` tells
        why). ``io``: how the command meets cci's streams and signals (else ``stdout`` and ``stderr``, no input).
        See :func:`cci_core.session_headless.run_to_end`."""
        from cci_core.session_headless import run_to_end

        opened = self.open(request._replace(kind=Kind.RUN, persistent=False, resume_from=None,
                                            readiness=_one_shot(request.readiness)))
        return run_to_end(self, opened.container, opened.ctx, command, stdout=stdout, stderr=stderr,
                          say=say or self._report, delete=True, detach=True, io=io)

    def run_prompt(self, request: LaunchRequest, prompt: Prompt, *, latest: bool = False, stdout: Any = None,
                   stderr: Any = None, say: Callable[[str], None] | None = None) -> int:
        """``cci run --prompt``: the tool headless in a fresh session container of ``request``'s workspace; its exit
        code. ``request.resume_from`` (or, with ``latest``, the workspace's newest saved session) continues a saved
        session. A tool without a headless mode is refused before anything is made; the session is saved and its
        container deleted afterwards whatever happens. See :mod:`cci_core.session_headless`."""
        from cci_core.session_headless import headless_command, run_headless

        resume = latest or request.resume_from is not None
        headless_command(self._tool(), str(uuid.UUID(int=0)), resume=resume, structured=prompt.structured)
        opened = self.open(request._replace(kind=Kind.SESSION, persistent=False,
                                            readiness=_one_shot(request.readiness)), latest=latest)
        return run_headless(self, opened.container, opened.ctx, prompt, resume=resume, stdout=stdout, stderr=stderr,
                            say=say or self._report)

    @staticmethod
    def ended(containers: Sequence[ContainerInfo]) -> list[ContainerInfo]:
        """Sessions that stopped while no cci process watched them (running by label, stopped in fact), and those
        past their deadline (``[limits] duration``), whoever watches them."""
        return [info for info in containers
                if (record := SessionRecord.from_labels(info.labels)).is_session and record.state is State.RUNNING
                and (info.status == "stopped" or overdue(record.deadline))]

    @staticmethod
    def interrupted_ends(containers: Sequence[ContainerInfo]) -> list[ContainerInfo]:
        """Sessions whose end was begun by a cci process that is gone, before it was saved: :meth:`recover` ends
        them again."""
        return [info for info in containers
                if (record := SessionRecord.from_labels(info.labels)).is_session and record.state is State.ENDING
                and record.previous in (State.RUNNING, None) and record.orphaned()]

    def current(self) -> list[ContainerInfo]:
        """The session containers, once those that ended unwatched are finished; those finished now are left out
        (deleted, or persistent and saved: the next listing shows them), as ``cci list`` always did."""
        listing = self.driver.list_containers()
        finished = set(self.reconcile(listing))
        return [info for info in listing if is_session(info.labels) and info.name not in finished]

    def _still_there(self, name: str) -> Container | None:
        """Container ``name``, or None when it is gone since it was listed (another cci process finished it)."""
        try:
            return self.driver.get(name)
        except NotFoundError:
            return None

    def reconcile(self, containers: Sequence[ContainerInfo] | None = None) -> list[str]:
        """Finish every session that ended unwatched (save, then delete unless persistent); return their names.

        A session that cannot be finished now (its save failed) is left for a
        later command and reported through :attr:`warn`; the others still finish.
        """
        listing = self.driver.list_containers() if containers is None else containers
        finished = []
        for info in self.interrupted_ends(listing):  # (a 'cci run''s detached end that did not complete, say)
            try:
                if (container := self._still_there(info.name)) is not None:
                    self.recover(container)
                finished.append(info.name)
            except CciError as exc:
                if self.warn is None:
                    raise
                self.warn(f"could not end {info.name} (kept, retried by the next command): {exc}")
        for info in self.ended(listing):
            try:
                # one past its deadline is stopped at once, as the attached cci stops it (root inside can make a
                # graceful stop wait its whole timeout); one stopped already needs no stop
                if (container := self._still_there(info.name)) is None:
                    finished.append(info.name)
                elif self.finish(container, force=True):
                    finished.append(info.name)
                    if info.status != "stopped":
                        self._report(ended_by_duration(info.name, SessionRecord.from_labels(info.labels)))
            except CciError as exc:
                if self.warn is None:
                    raise
                self.warn(f"could not finish the ended session {info.name} (kept, retried by the next command): {exc}")
        return finished
