"""The session lifecycle: launch, end (save, then delete unless persistent), and recovery.

State lives in the container's own labels (``user.cci.*``), so any cci process
can finish what another started (see ``docs/lifecycle.md``)::

    launching --started--> running --stopped: poweroff inside, incus stop--+
        |                     |                                          v
        |                     +--cci shutdown / cci kill---------------> ending --save--> deleted (ephemeral)
        +--launch failed: deleted by the launcher                          |            +--> saved (persistent)
                                                                         (one process wins the move to ending)

A session that ends while no cci process watches it is finished by the next
cci command that calls :meth:`SessionManager.reconcile`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cci_core.context import LaunchContext, Mount
from cci_core.driver import Container, ContainerExistsError, ContainerInfo, ContainerSpec, Driver
from cci_core.errors import CciError, PluginError, UsageError
from cci_core.layout import CONTAINER_HOME, CONTAINER_USER, WORKSPACE_PATH
from cci_core.mount_checks import check_mountable, check_sources, check_storage_layout

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.networking import Attachment
    from cci_core.plugin_manager import Plugins

# label values (each stored as user.cci.<key>)
KIND_SESSION = "session"  # an interactive tool session (cci shell)
KIND_RUN = "run"  # a one-shot command (cci run)
KIND_BUILD = "build"  # a container an image builder is working in (cci build)
LAUNCHING, RUNNING, ENDING, SAVED = "launching", "running", "ending", "saved"
PERSISTENT, EPHEMERAL = "persistent", "ephemeral"

BOOT_TIMEOUT = 120  # seconds a session waits for the container to finish booting


class LaunchRequest(NamedTuple):
    """What the user asked for; config values already merged in (image, persistence, environment)."""

    workspace: Path
    kind: str = KIND_SESSION
    slot: int | None = None
    storage: tuple[Path, ...] = ()
    resume_from: str | None = None
    persistent: bool | None = None  # None: [defaults] persistent


def launcher_id() -> str:
    """This process, unique on this host across reboots: ``<boot id>:<pid>``."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = "unknown"
    return f"{boot}:{os.getpid()}"


def launcher_alive(label: str) -> bool:
    """Whether the process a ``launcher`` label names still runs (on this host, this boot)."""
    boot, _, pid = label.rpartition(":")
    if boot != launcher_id().rpartition(":")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: inside the container: no systemd, nothing to wait for; else wait for systemd's socket to appear
_SYSTEMD_UP = "command -v systemctl >/dev/null || exit 0; until [ -S /run/systemd/private ]; do sleep 0.05; done; "
#: ... then for the boot to finish
_WAIT_FOR_BOOT = _SYSTEMD_UP + "systemctl is-system-running --wait >/dev/null"
#: ... then for basic.target, or for the boot to be over without it (a failed unit it needs)
_WAIT_FOR_SESSION = _SYSTEMD_UP + (
    "until systemctl is-active --quiet basic.target; do "
    "case $(systemctl is-system-running) in initializing|starting) sleep 0.05;; *) exit 0;; esac; done"
)


def wait_for_boot(container: Container) -> None:
    """Block until the container's init has finished booting (systemd reports running or degraded).

    Images without systemd have nothing to wait for. A boot that takes longer
    than :data:`BOOT_TIMEOUT` is not waited for further.
    """
    container.exec(["timeout", str(BOOT_TIMEOUT), "sh", "-c", _WAIT_FOR_BOOT])


def wait_for_session(container: Container) -> None:
    """Block until the container has booted as far as a session needs: systemd's basic.target is active.

    By then the file systems are mounted, systemd-tmpfiles has set up ``/tmp`` (it
    empties it, and the session's tmux keeps its socket there) and the sockets listen
    (D-Bus, Docker's); the rest of the boot (the network's DHCP, logind, ...) goes on
    while the tool starts. ``cci shell`` and ``cci attach`` use this; the rest waits for
    the whole boot (:func:`wait_for_boot`). Same timeout and images without systemd.
    """
    container.exec(["timeout", str(BOOT_TIMEOUT), "sh", "-c", _WAIT_FOR_SESSION])


#: after the attached tmux was cut off, how soon a poweroff inside stops the container (tmux dies in its last step)
QUICK_STOP = 3.0
#: how long a container whose tmux session is gone may take to stop: systemd's last step of a poweroff waits up
#: to its stop timeout (90 s by default) for processes that ignore SIGTERM before it kills them
STOP_WAIT = 120.0


def is_session(labels: Mapping[str, str]) -> bool:
    """Whether labels mark a container cci made for a session or a run (not a low-level one)."""
    return labels.get("kind") in (KIND_SESSION, KIND_RUN) and "workspace" in labels and "session" in labels


class SessionManager:
    """Launches and ends sessions for one invocation, through the driver and the plugin hooks."""

    def __init__(self, config: Config, driver: Driver, plugins: Plugins,
                 warn: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.driver = driver
        self.plugins = plugins
        #: where problems that do not stop the command are reported (None: raise them)
        self.warn = warn

    # -- launch --------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> tuple[Container, LaunchContext]:
        """Claim a slot, configure, start: a running container with credentials in place.

        On any failure after the claim, the container is deleted again: nothing half-made is left.
        """
        defaults = self.config.defaults
        tool = self._tool() if request.kind == KIND_SESSION else None
        workspace = request.workspace.resolve()
        check_mountable(workspace)
        storage = tuple(path.resolve() for path in request.storage)
        for path in storage:
            check_mountable(path, "storage directory")
        check_storage_layout(workspace, storage)
        attachment = self.attach_network()
        labels = {
            "kind": request.kind,
            "workspace": str(workspace),
            "tool": tool.name if tool else "",
            "mode": PERSISTENT if (defaults.persistent if request.persistent is None else request.persistent)
            else EPHEMERAL,
            "session": request.resume_from or str(uuid.uuid4()),
            "state": LAUNCHING,
            "launcher": launcher_id(),
            "network": attachment.policy,
        }

        def create(name: str, slot: int) -> Container:
            spec = ContainerSpec(name, defaults.image, labels={**labels, "slot": str(slot)}, config=self.driver.base_config)
            try:
                return self.driver.create(spec)
            except ContainerExistsError:
                raise  # another launch's: the next slot is tried
            except BaseException:  # Ctrl+C while Incus made it, say: it may exist all the same
                self._undo_create(name, labels["launcher"])
                raise

        from cci_core.slots import claim_slot

        container = claim_slot(self.driver, workspace, create, slot=request.slot)
        try:
            ctx = self.context(container.name, container.labels())
            ctx.storage = storage
            ctx.tool = tool
            ctx.resume_from = request.resume_from
            self._configure(container, ctx, attachment.network)
            self.plugins.hook.cci_pre_start(ctx=ctx, container=container, restart=False)
            self._start(container)
            if request.resume_from:  # these write under the home only: while the container boots
                self.plugins.hook.cci_session_restore(ctx=ctx, container=container)
            self.plugins.hook.cci_inject_credentials(ctx=ctx, container=container)
            if request.kind == KIND_SESSION:
                wait_for_session(container)
            self._started(container, labels["launcher"])
            self.plugins.hook.cci_post_launch(ctx=ctx, container=container)
        except BaseException:
            if self._reclaim(container, labels["launcher"], LAUNCHING):
                self.discard(container)
            raise
        return container, ctx

    def _tool(self, name: str | None = None) -> Any:
        """The configured tool (or the one named, e.g. by a container's label), ready to use."""
        tool_config = self.config.tool
        name = name or tool_config.name
        return self.plugins.registries.tools.get(name)(tool_config.binary if name == tool_config.name else None)

    def attach_network(self) -> Attachment:
        """Have the driver enforce the configured network policy; its notes go to :attr:`warn`."""
        from cci_core.networking import attach

        attachment = attach(self.config, self.plugins.registries, self.driver)
        for note in attachment.plan.notes if attachment.plan else ():
            self._report(f"network policy {attachment.policy}: {note}")
        return attachment

    def _report(self, message: str) -> None:
        if self.warn is not None:
            self.warn(message)

    def _configure(self, container: Container, ctx: LaunchContext, network: str | None) -> None:
        """Run the pre-launch hooks and apply what they contribute (before the first start)."""
        hook = self.plugins.hook
        hook.cci_pre_launch(ctx=ctx)
        for contribution in hook.cci_environment(ctx=ctx):
            ctx.environment.update(contribution or {})
        base = self.driver.base_config
        config = dict(base)
        for contribution in hook.cci_instance_config(ctx=ctx):
            for key, value in (contribution or {}).items():
                if key in config and config[key] != value and key not in base:
                    raise PluginError(f"two plugins set {key} to different values ({config[key]!r}, {value!r})")
                config[key] = value
        mounts = [Mount("workspace", ctx.workspace, WORKSPACE_PATH, shift=True)]
        mounts += [Mount(f"storage{index}", path, f"/storage/{path.name}", shift=True)
                   for index, path in enumerate(ctx.storage)]
        for contribution in hook.cci_mounts(ctx=ctx):
            mounts.extend(contribution or ())
        devices = [mount.device for mount in mounts]
        duplicates = sorted({device for device in devices if devices.count(device) > 1})
        if duplicates:
            raise PluginError(f"two mounts use the device name(s) {', '.join(duplicates)}")
        container.configure(config, mounts, network)

    def discard(self, container: Container) -> None:
        """Delete a container at once, without saving (a failed launch, an orphan); never raises."""
        try:
            if container.status() != "stopped":
                container.stop(force=True)
            container.delete()
        except CciError:
            pass

    def reuse(self, workspace: Path, slot: int | None = None,
              session: str | None = None) -> tuple[Container, LaunchContext] | None:
        """Start this workspace's saved persistent container (the given slot or session, or the lowest slot)."""
        workspace = workspace.resolve()
        saved = sorted(
            (info for info in self.driver.list_containers()
             if is_session(info.labels) and info.labels.get("kind") == KIND_SESSION
             and info.labels.get("workspace") == str(workspace) and info.labels.get("state") == SAVED
             and (not slot or info.labels.get("slot") == str(slot))
             and (not session or info.labels.get("session") == session)),
            key=lambda info: int(info.labels.get("slot", "0") or 0),
        )
        for info in saved:
            container = self.driver.get(info.name)
            me = launcher_id()
            if not container.compare_and_set_labels({"state": SAVED}, {"state": LAUNCHING, "launcher": me,
                                                                       "previous": SAVED}):
                continue  # another cci process took it
            ctx = self.context(info.name, container.labels())
            try:
                self._reattach(container, info.labels.get("network", ""))
                self.plugins.hook.cci_pre_start(ctx=ctx, container=container, restart=True)
                self._start(container)
                self.plugins.hook.cci_inject_credentials(ctx=ctx, container=container)
                wait_for_session(container)
                self._started(container, me)
                self.plugins.hook.cci_post_launch(ctx=ctx, container=container)
            except BaseException:
                try:  # back to how it was, stopped and saved, unless another cci process is ending it
                    if self._reclaim(container, me, SAVED):
                        self._put_back(container)
                except CciError:
                    pass
                raise
            return container, ctx
        return None

    def _start(self, container: Container) -> None:
        """Start, once its mounts still lead where cci resolved them, none in another session's workspace (see
        :func:`check_sources`)."""
        check_sources(container.host_mounts(), container.name, self.other_workspaces(container.name))
        container.start()

    def other_workspaces(self, name: str) -> set[Path]:
        """The workspaces of the sessions other than container ``name``: their agents can change what is in them."""
        return {Path(info.labels["workspace"]) for info in self.driver.list_containers()
                if is_session(info.labels) and info.name != name}

    @staticmethod
    def _started(container: Container, me: str) -> None:
        """LAUNCHING -> RUNNING, unless another cci process took the container over meanwhile (to end it)."""
        if not container.compare_and_set_labels({"state": LAUNCHING, "launcher": me}, {"state": RUNNING}):
            raise CciError(f"{container.name} was ended by another cci command while it started")

    @staticmethod
    def _reclaim(container: Container, me: str, previous: str) -> bool:
        """Take back a container this process launched (to undo the launch): False if another cci process
        took it over meanwhile. When Incus cannot tell, it counts as ours: nothing else would undo it.

        ``previous`` tells :meth:`recover` what to do if the undoing is cut short: a new
        launch (``launching``) is deleted, never saved; a restart (``saved``) is put back.
        """
        try:
            return any(container.compare_and_set_labels({"state": state, "launcher": me},
                                                        {"state": ENDING, "previous": previous})
                       for state in (LAUNCHING, RUNNING))
        except CciError:
            return True

    def _undo_create(self, name: str, me: str) -> None:
        """Delete container ``name`` if this process made it after all; never raises (the first error matters)."""
        try:
            container = self.driver.get(name)
        except CciError:
            return  # not made
        if self._reclaim(container, me, LAUNCHING):
            self.discard(container)

    @staticmethod
    def _put_back(container: Container) -> None:
        """A persistent container whose restart failed: stopped, and saved as it was."""
        if container.status() != "stopped":
            container.stop(force=True)
        container.set_labels({"state": SAVED})

    def recover(self, container: Container) -> None:
        """Put right a container whose cci process died (see ``cci clean``).

        An end it interrupted is done again (saved first); a persistent container it
        was restarting or ending without a save to make is stopped and saved as it was;
        any other launch is deleted.
        """
        labels = container.labels()
        owner = {"state": labels.get("state", ""), "launcher": labels.get("launcher", "")}
        previous = labels.get("previous", "")
        if owner["state"] == ENDING and previous in (RUNNING, ""):
            if container.compare_and_set_labels(owner, {"state": RUNNING}):
                self.finish(self.driver.get(container.name))
        elif not container.compare_and_set_labels(owner, {"state": ENDING, "launcher": launcher_id()}):
            return  # another cci process acted on it meanwhile
        elif previous == SAVED or (owner["state"] == ENDING and previous != LAUNCHING
                                   and labels.get("mode") == PERSISTENT):
            self._put_back(container)
        else:
            self.discard(container)

    def _reattach(self, container: Container, previous: str) -> None:
        """Put a saved container under the policy configured now (its plan made afresh) before it starts."""
        attachment = self.attach_network()
        if attachment.network is not None:
            container.configure({}, [], attachment.network)
        elif previous and previous != attachment.policy:
            self._report(f"{container.name} keeps its {previous!r} network: a saved container cannot go back "
                         f"to {attachment.policy!r}; start a new session for that")
            return
        container.set_labels({"network": attachment.policy})

    # -- contexts ------------------------------------------------------------------------------------

    def context(self, name: str, labels: Mapping[str, str]) -> LaunchContext:
        """Rebuild a session's context from its container labels (for hooks run by a later process).

        Its environment is this invocation's ``[defaults] environment`` only for a
        container of this invocation's workspace: what one project's config names
        (its tokens, say) never goes into another project's container.
        """
        slot = labels.get("slot", "0")
        tool_name = labels.get("tool", "")
        workspace = labels.get("workspace", "/")
        return LaunchContext(
            config=self.config,
            workspace=Path(workspace),
            container_name=name,
            slot=int(slot) if slot.isdigit() else 0,
            session_id=labels.get("session", ""),
            persistent=labels.get("mode") == PERSISTENT,
            image=self.config.defaults.image,
            environment=dict(self.config.defaults.environment) if workspace == str(self.config.workspace) else {},
            tool=self._tool(tool_name) if tool_name else None,
        )

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

    # -- ending --------------------------------------------------------------------------------------

    def finish(self, container: Container, *, force: bool = False, timeout: int = 60,
               delete: bool | None = None) -> bool:
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
        """
        labels = container.labels()
        state = labels.get("state", "")
        if state not in (RUNNING, SAVED, LAUNCHING):
            return False
        if not container.compare_and_set_labels({"state": state}, {"state": ENDING, "launcher": launcher_id(),
                                                                   "previous": state}):
            return False
        # handed back when the session is not ended now (to its own cci process, if it has one that still runs:
        # a 'cci run'), so that a later command retries
        handed_back = {"state": state, "launcher": labels.get("launcher", "")}
        failure: CciError | None = None
        try:
            if container.status() != "stopped":
                self._stop(container, force=force, timeout=timeout)
            try:
                ctx = self.context(container.name, labels)
            except CciError as exc:  # the tool's plugin is gone: nothing can save its state
                ctx = self.context(container.name, {**labels, "tool": ""})
                failure = exc if state == RUNNING else None
            if failure is None and state == RUNNING:  # a saved session was saved when it ended; a launch never ran
                try:
                    self.plugins.hook.cci_post_exit_save(ctx=ctx, container=container)
                except CciError as exc:
                    failure = exc
        except BaseException:
            container.set_labels(handed_back)  # not stopped, or interrupted: nothing has ended
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
        else:
            container.set_labels({"state": SAVED})
        self.plugins.hook.cci_session_end(ctx=ctx, deleted=deleted, report=self._report)
        return True

    @staticmethod
    def _stop(container: Container, *, force: bool, timeout: int) -> None:
        if not force:
            try:
                container.stop(timeout=timeout)
                return
            except CciError:
                pass  # did not stop in time: force it
        container.stop(force=True)

    @staticmethod
    def ended(containers: Sequence[ContainerInfo]) -> list[ContainerInfo]:
        """Sessions that stopped while no cci process watched them: running by label, stopped in fact."""
        return [info for info in containers
                if is_session(info.labels) and info.labels.get("state") == RUNNING and info.status == "stopped"]

    def reconcile(self, containers: Sequence[ContainerInfo] | None = None) -> list[str]:
        """Finish every session that ended unwatched (save, then delete unless persistent); return their names.

        A session that cannot be finished now (its save failed) is left for a
        later command and reported through :attr:`warn`; the others still finish.
        """
        listing = self.driver.list_containers() if containers is None else containers
        finished = []
        for info in self.ended(listing):
            try:
                if self.finish(self.driver.get(info.name)):
                    finished.append(info.name)
            except CciError as exc:
                if self.warn is None:
                    raise
                self.warn(f"could not finish the ended session {info.name} (kept, retried by the next command): {exc}")
        return finished
