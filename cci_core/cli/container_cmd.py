"""``cci container``: low-level operations on any container of the project, by name."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cci_core.cli.command_io import command_io, tty_option
from cci_core.cli.options import _parse_env
from cci_core.cli.state import get_state
from cci_core.errors import BackendError, NotFoundError, UsageError

if TYPE_CHECKING:
    from cci_core.driver import Container, Driver

#: the label cci puts on containers made by ``cci container launch`` (``user.cci.kind=container``)
KIND_CONTAINER = "container"

def check_name(driver: Driver, name: str) -> str:
    """``name`` if the driver accepts it as a container name, else a :class:`UsageError` saying why."""
    problem = driver.check_container_name(name)
    if problem:
        raise UsageError(f"invalid container name {name!r}", hint=problem)
    return name


def check_absolute(path: str, what: str) -> str:
    """``path`` if it is absolute (a path inside a container), else a :class:`UsageError`."""
    if not path.startswith("/"):
        raise UsageError(f"{what} must be an absolute path inside the container, got {path!r}")
    return path


def driver_of(ctx: click.Context) -> Driver:
    """The invocation's container driver."""
    return get_state(ctx).driver


def _done(name: str, what: str) -> None:
    click.echo(f"{name}: {what}")


def _boot(container: Container) -> None:
    """Start and wait until init has booted, so that a clean stop and exec behave at once."""
    from cci_core.session_readiness import wait_for_boot

    container.start()
    wait_for_boot(container)


@click.group()
def container() -> None:
    """Low-level container operations: launch, start, stop, delete, exec, exists, running, mount.

    Containers are named as in Incus and live in the configured project
    ([incus] project). These commands work on any container there, not only
    cci's sessions.
    """


@container.command()
@click.argument("image")
@click.argument("name")
@click.option("--ephemeral", is_flag=True, help="Delete the container when it stops (an Incus ephemeral container).")
@click.pass_context
def launch(ctx: click.Context, image: str, name: str, ephemeral: bool) -> None:
    """Create a container NAME from IMAGE, start it and wait for it to boot.

    It is labelled user.cci.kind=container and runs under the configured network
    policy (--network), as sessions do. If it cannot be started, it is deleted again.
    """
    from cci_core.cli.sessions import manager_for
    from cci_core.driver import ContainerExistsError, ContainerSpec

    check_name(driver_of(ctx), name)
    attachment = manager_for(ctx).attach_network()  # a bad [network] stops here, before anything is made
    spec = ContainerSpec(name, image, labels={"kind": KIND_CONTAINER, "network": attachment.policy},
                         ephemeral=ephemeral, network=attachment.network)
    driver = driver_of(ctx)
    try:
        created = driver.create(spec)
    except ContainerExistsError as exc:
        raise ContainerExistsError(
            exc.message, hint=f"pick another name, or delete it first with 'cci container delete --force {name}'"
        ) from exc
    try:
        if attachment.network is not None:  # (made on it: nothing to update, but a proxy's CA to put in)
            created.configure({}, [], attachment.network)
        _boot(created)
    except BaseException:
        _discard(driver, name)
        raise
    _done(name, "launched")


def _discard(driver: Driver, name: str) -> None:
    """Remove a container we just created and failed to start; never raises (the first error matters)."""
    try:
        _remove(driver, driver.get(name))
    except Exception:  # noqa: BLE001 - best effort cleanup
        pass


def _remove(driver: Driver, target: Container) -> None:
    """Stop ``target`` at once if it runs, then delete it (Incus deletes an ephemeral one when it stops)."""
    if target.status() != "stopped":
        target.stop(force=True)
        if not driver.exists(target.name):
            return
    target.delete()


@container.command()
@click.argument("name")
@click.pass_context
def start(ctx: click.Context, name: str) -> None:
    """Start container NAME and wait for it to boot (nothing to do if it is running).

    A session's container is checked as a session restart is: it is not started
    if its workspace or a storage directory is no longer the directory cci
    mounted (a link put there from a container, say).
    """
    from cci_core.cli.sessions import manager_for
    from cci_core.mount_checks import check_sources
    from cci_core.session_record import is_session

    target = driver_of(ctx).get(name)
    if target.status() == "running":
        _done(name, "already running")
        return
    if is_session(target.labels()):
        manager = manager_for(ctx)
        check_sources(target.host_mounts(), name, manager.other_workspaces(name), manager.tool_directories)
    _boot(target)
    _done(name, "started")


@container.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Stop at once (kill) instead of a clean shutdown.")
@click.option("--timeout", default=60, show_default=True, type=click.IntRange(min=1),
              help="Seconds to wait for a clean shutdown before failing (ignored with --force).")
@click.pass_context
def stop(ctx: click.Context, name: str, force: bool, timeout: int) -> None:
    """Stop container NAME (nothing to do if it is stopped).

    A clean shutdown that does not finish within --timeout seconds is an
    error (exit 4) and nothing is forced; --force stops it at once. An
    ephemeral container is deleted by Incus when it stops.
    """
    target = driver_of(ctx).get(name)
    if target.status() == "stopped":
        _done(name, "already stopped")
        return
    try:
        target.stop(force=force, timeout=timeout)
    except BackendError as exc:
        if force:
            raise
        raise BackendError(exc.message, hint="use --force to stop it at once") from exc
    _done(name, "stopped")


@container.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Stop it at once first if it is running.")
@click.pass_context
def delete(ctx: click.Context, name: str, force: bool) -> None:
    """Delete container NAME. A running container is refused unless --force is given."""
    driver = driver_of(ctx)
    target = driver.get(name)
    status = target.status()
    if status != "stopped" and not force:
        raise UsageError(f"container {name} is {status}",
                         hint=f"stop it first with 'cci container stop {name}', or use --force")
    _remove(driver, target)
    _done(name, "deleted")


@container.command(name="exec")
@click.argument("name")
@click.argument("command", nargs=-1, required=True, metavar="-- CMD...")
@click.option("--user", type=click.IntRange(min=0), metavar="UID", help="Run as this uid (default 0, root).")
@click.option("--group", type=click.IntRange(min=0), metavar="GID", help="Run with this gid (default: --user, else 0).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", callback=_parse_env,
              help="Set a variable for the command (repeatable).")
@click.option("--cwd", metavar="DIR", help="Working directory inside the container (absolute).")
@click.option("--capture", is_flag=True, help="Collect the output and print it when the command ends (see --format).")
@click.option("--format", "fmt", type=click.Choice(["json", "raw"]), default=None,
              help="With --capture: json (default) or raw.")
@tty_option
@click.pass_context
def exec_(ctx: click.Context, name: str, command: tuple[str, ...], user: int | None, group: int | None,
          env: dict[str, str], cwd: str | None, capture: bool, fmt: str | None, tty: bool | None) -> None:
    """Run CMD in running container NAME; cci exits with CMD's exit code.

    Put -- before CMD. Only the --env variables are passed (never the host's
    environment; Incus adds PATH and LANG). Standard input goes to CMD as it
    reads (its end is CMD's end of file). From a terminal (input and output
    both; not with --capture), CMD runs on one. Ctrl+C, SIGTERM and SIGHUP go
    to CMD (128+N is the exit code of a CMD that signal N killed); a third one
    makes cci stop waiting for it.

    \b
    Without --capture, stdout and stderr are streamed as they arrive.
    --capture (--format json) prints one JSON object when CMD ends:
      {"exit_code": N, "stdout": "...", "stderr": "..."}
    --capture --format raw prints only CMD's stdout, byte for byte, when it
      ends; CMD's stderr is streamed to cci's stderr.
    In every mode cci exits with CMD's exit code. When cci itself fails
    (no such container, not running...), it prints nothing on stdout and one
    line on stderr, and exits with its own code (2, 4 or 5).
    """
    if fmt is not None and not capture:
        raise UsageError("--format only applies with --capture")
    if tty and capture:
        raise UsageError("--tty does not go with --capture (a terminal's output cannot be told apart from its input)")
    if cwd is not None:
        check_absolute(cwd, "--cwd")
    target = driver_of(ctx).get(name)
    if target.status() != "running":
        raise UsageError(f"container {name} is not running", hint=f"start it with 'cci container start {name}'")
    from cci_core.cli.signals import interruptible
    from cci_core.cli.streams import binary_writer
    from cci_core.command_io import run_command

    out: list[bytes] = []
    err: list[bytes] = []
    json_capture = capture and fmt != "raw"
    io = command_io(False if capture else tty, out.append if capture else binary_writer(sys.stdout),
                    err.append if json_capture else binary_writer(sys.stderr))
    with interruptible():
        code = run_command(target, command, user=user or 0, group=group, environment=env, cwd=cwd, io=io)
    if json_capture:
        import json

        click.echo(json.dumps({"exit_code": code, "stdout": _text(out), "stderr": _text(err)}))
    elif capture:  # raw: stdout exactly as the command wrote it
        binary_writer(sys.stdout)(b"".join(out))  # type: ignore[operator]
    ctx.exit(code)


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", errors="replace")


@container.command()
@click.argument("name")
@click.pass_context
def exists(ctx: click.Context, name: str) -> None:
    """Exit 0 if container NAME exists, 1 if not; prints nothing (for scripts).

    A backend failure (Incus unreachable...) is reported and exits 4.
    """
    ctx.exit(0 if driver_of(ctx).exists(name) else 1)


@container.command()
@click.argument("name")
@click.pass_context
def running(ctx: click.Context, name: str) -> None:
    """Exit 0 if container NAME is running, 1 if not or if it does not exist; prints nothing (for scripts).

    A backend failure (Incus unreachable...) is reported and exits 4.
    """
    try:
        status = driver_of(ctx).get(name).status()
    except NotFoundError:
        status = "missing"
    ctx.exit(0 if status == "running" else 1)


@container.command()
@click.argument("name")
@click.argument("device")
@click.argument("source")
@click.argument("path")
@click.option("--shift", is_flag=True,
              help="Keep host ownership: your files appear as the container user's ([incus] container_uid) and what "
                   "it writes is yours (a raw.idmap of your ids alone; the container must be stopped to add one).")
@click.option("--readonly", is_flag=True, help="Mount read-only.")
@click.pass_context
def mount(ctx: click.Context, name: str, device: str, source: str, path: str, shift: bool, readonly: bool) -> None:
    """Mount host directory SOURCE at PATH in container NAME, as disk device DEVICE.

    SOURCE must exist (symlinks are resolved); PATH must be absolute. Works
    on a running container too. A device of the same name is replaced.
    """
    from cci_core.context import Mount

    check_absolute(path, "PATH")
    directory = existing_path(source)
    if not directory.is_dir():
        raise UsageError(f"{source} is not a directory")
    driver_of(ctx).get(name).add_mount(Mount(device, directory, path, shift=shift, readonly=readonly))
    _done(name, f"mounted {directory} at {path}")


def existing_path(path: str) -> Path:
    """The absolute real path of a host file or directory, or :class:`NotFoundError` if it is missing."""
    try:
        return Path(path).resolve(strict=True)
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
