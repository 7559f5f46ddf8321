"""The hook specifications: the whole contract between cci's core and its plugins.

Plugins implement these with the :data:`hookimpl` marker::

    from cci_core import hookimpl

    @hookimpl
    def cci_register(register):
        register.add_tool(MyTool)

Hooks are always called with keyword arguments, so an implementation may
accept any subset of a hook's parameters. New parameters may be added to a
hook without breaking plugins that do not use them.

Two kinds of hook:

* **registration** (:func:`cci_register`): called once when the plugin
  manager is built; plugins register the named, exactly-one-active things
  (drivers, tools, network policies, image builders) and extra CLI commands;
* **lifecycle**: run by the session object (:class:`cci_core.session.SessionManager`) for every
  session. A **launch** (a new container: ``cci shell``, ``cci run``)::

      (network policy's plan enforced) -> (slot claimed: container created) -> cci_pre_launch
        -> cci_environment, cci_instance_config, cci_mounts -> (configured, on the policy's network)
        -> cci_pre_start(restart=False) -> (started)
        -> cci_session_restore (resuming only) -> cci_inject_credentials -> cci_sandbox_brief -> cci_post_launch
        -> ... session runs; cci_session_save at detach and periodically ...
        -> (session ends) -> cci_post_exit_save -> (container deleted unless persistent)
        -> cci_session_end

  A container taken from the warm pool (``[pool] size``) goes through the same hooks, but
  runs already, booted, when it is claimed: what is configured reaches it at once (its
  mounts included), and "started" is the check of those mounts.

  A **reuse** (``cci shell`` starting a saved persistent container again) runs the same
  hooks from ``cci_pre_launch`` on: the container is configured again with what they
  contribute now (environment, instance config, mounts with this invocation's
  ``--storage``, network), then ``cci_pre_start(restart=True)``; never
  ``cci_session_restore`` (the container holds its state).

  An **attach** (``cci attach``, ``cci tmux``, to a session that runs) runs
  ``cci_environment`` only, so that what plugins contribute reaches the processes cci
  starts in the tmux session; nothing is checked or configured again. While attached:
  ``cci_session_save`` (``PERIODIC``), and when the user leaves, ``DETACH``.

  An **end** (a poweroff inside, ``cci shutdown``, ``cci kill``, the next command after
  an unwatched end): ``cci_post_exit_save`` (only for a session that was running),
  then ``cci_session_end``.

  Many plugins contribute to each lifecycle hook; results are merged by the core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.context import LaunchContext, Mount, SessionEvent
    from cci_core.check import Check
    from cci_core.driver import Container
    from cci_core.registry import Register

PROJECT_NAME = "cci"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def cci_register(register: Register) -> None:
    """Register what this plugin provides.

    Called once per plugin when the plugin manager is built, with a
    ``register`` bound to that plugin so that every registration is
    attributed to it.

    :param register: call ``add_driver``, ``add_tool``, ``add_network_policy``,
        ``add_image_builder`` or ``add_command`` on it. A name registered twice
        is an error naming both plugins.
    """


@hookspec
def cci_pre_launch(ctx: LaunchContext) -> None:
    """Check and adjust a session before its container is configured and started.

    The slot is already claimed (the container exists, stopped: a new one made with
    the session's own mounts and network but nothing of the plugins', or a saved
    persistent one about to be reused and configured again; or running: one taken
    from the warm pool, with nothing of any session in it), so ``ctx.container_name``
    and ``ctx.slot`` are final. Raise a
    :class:`cci_core.errors.CciError` to refuse the launch: cci deletes a new
    container again, leaving nothing behind, and puts a reused one back, saved.

    :param ctx: the launch being prepared; plugins may change ``ctx.environment``
        (``ctx.image`` is the image new containers are made from, read-only).
    """


@hookspec
def cci_instance_config(ctx: LaunchContext) -> Mapping[str, str] | None:
    """Return container configuration keys to set before the container starts (at a launch and a reuse).

    Keys are backend configuration keys (for Incus, e.g.
    ``security.nesting``). Two plugins returning different values for one
    key is an error. A launch given any makes a container of its own rather
    than take one from the warm pool (a key may apply only at a start).

    :param ctx: the launch being prepared.
    :return: a mapping of keys to values, or None.
    """


@hookspec
def cci_mounts(ctx: LaunchContext) -> Sequence[Mount] | None:
    """Return extra host directories to mount into the container.

    The workspace mount is made by the core; this hook adds others (for
    example ``--storage``). Device names must be unique across plugins.

    :param ctx: the launch being prepared.
    :return: mounts to add, or None.
    """


@hookspec
def cci_environment(ctx: LaunchContext) -> Mapping[str, str] | None:
    """Return environment variables for the tool's process in the container.

    Only what a plugin names explicitly is passed: the host environment is
    never forwarded. Later (higher-priority) plugins win on conflicts. Called
    at a launch and a reuse, and at an attach to a running session (``cci
    attach``, ``cci tmux``: the processes started in its tmux get it too).

    :param ctx: the launch being prepared, or the running session.
    :return: variables to set, or None.
    """


@hookspec
def cci_pre_start(ctx: LaunchContext, container: Container, restart: bool) -> None:
    """Run right before a session's container starts: a new one once it is configured, or a saved
    persistent one (``restart``) before it starts again. Nothing of the session runs in it yet
    (one taken from the warm pool runs already, booted from its image and nothing else: what this
    hook configures reaches it at once).

    Raise a :class:`cci_core.errors.CciError` to refuse the start: the launch is undone.

    :param ctx: the session about to start.
    :param container: the configured container, stopped (or warm: running).
    :param restart: True for a saved persistent container started again (its rootfs is what the
        previous session left, the agent's to change).
    """


@hookspec
def cci_session_restore(ctx: LaunchContext, container: Container) -> None:
    """Put a saved session's state back into a started container before the tool runs (its boot may still be
    going on: write under the user's home, which the boot does not touch).

    Called only when resuming (``ctx.resume_from`` is the saved session's id)
    into a fresh container, before :func:`cci_inject_credentials`.

    :param ctx: the session being resumed.
    :param container: the started container.
    """


@hookspec
def cci_inject_credentials(ctx: LaunchContext, container: Container) -> None:
    """Copy credentials into a started container (its boot may still be going on, as for
    :func:`cci_session_restore`).

    Called on every start and every resume, so credentials are always fresh
    copies from the host. Credentials must never be written anywhere that is
    saved (see :func:`cci_post_exit_save`). The home is the agent's: write there with
    :func:`cci_core.api.write_home_file` (a link the agent planted is never followed).

    :param ctx: the running session.
    :param container: the started container.
    """


@hookspec
def cci_post_launch(ctx: LaunchContext, container: Container) -> None:
    """Run after the container has started, credentials are in place and it has booted as far as the
    session needs (docs/lifecycle.md, Readiness).

    :param ctx: the running session.
    :param container: the started container.
    """


@hookspec
def cci_session_save(ctx: LaunchContext, container: Container, event: SessionEvent) -> None:
    """Save session state while the session is still alive.

    Called at detach (``DETACH``), every 5 minutes while attached (``PERIODIC``)
    and on demand (``REQUESTED``), so a host crash loses at most minutes of
    work. Must be idempotent and must not include credentials.

    :param ctx: the running session.
    :param container: the running container.
    :param event: why the save happens.
    """


@hookspec
def cci_post_exit_save(ctx: LaunchContext, container: Container) -> None:
    """Save session state after the session ended, before the container may be deleted.

    The container may be stopped. Called exactly once per ended session,
    including when the session ended while no cci process was alive (the next
    cci command that finds the stopped container calls it). Called again after
    ``cci snapshot restore`` put a saved container back to a snapshot: the saved
    copy then follows the restored container.

    :param ctx: the ended session, rebuilt from the container's metadata if needed.
    :param container: the ended container.
    """


@hookspec
def cci_session_end(ctx: LaunchContext, deleted: bool, report: Callable[[str], None]) -> None:
    """Clean up after a session: the container is gone (``deleted``) or kept for reuse.

    Called once the session's container has stopped, even when its save failed:
    the container is then kept (``deleted`` False) for a later command to retry
    the save, which calls this hook again. A ``cci run`` calls it before it returns,
    once stopped, and the detached process that saves and deletes the container
    after it calls it again (its reports go nowhere). So it must be idempotent.

    :param ctx: the ended session.
    :param deleted: whether the container was deleted (or is being deleted, by that detached process).
    :param report: prints one line the user should read (a warning) with the command's output.
    """


@hookspec
def cci_sandbox_brief(ctx: LaunchContext, container: Container) -> Sequence[str] | None:
    """Return paragraphs (Markdown) for the sandbox brief: the short file the tool reads at start that tells the
    agent it runs in a cci container, what it can reach and how to ask the user for more.

    Called at every start (launch and reuse) once the container runs, and again when
    what a paragraph says changes while it runs (``cci port add``). The tool adapter
    says where the brief goes (:attr:`~cci_core.tool.ToolAdapter.brief_path`).

    :param ctx: the session starting.
    :param container: its running container.
    :return: paragraphs, or None.
    """


@hookspec
def cci_doctor_checks(config: Config) -> Sequence[Check] | None:
    """Check that this machine can run what the plugin provides, for ``cci doctor``.

    Each check is independent and must not raise: a problem is a
    :class:`cci_core.doctor.Check` with status ``fail`` (or ``warn``) and a
    ``fix`` telling the user what to run. A driver plugin should return None
    unless it is the configured driver (``config.defaults.driver``).

    :param config: the merged configuration.
    :return: the checks, in the order they should be printed, or None.
    """
