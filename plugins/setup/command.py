"""``cci setup``: gather the facts, make the plan (:mod:`.plan`), print it or carry it out step by step."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from cci_core.api import CciError, current_config, own_command, system_config_file
from cci_builtin_plugins.setup.plan import DONE, MANUAL, Action, Options, Plan, Step, make_plan

if TYPE_CHECKING:
    from cci_core.api import Config
    from cci_builtin_plugins.setup.facts import HostFacts


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the plan: what is done already and the exact commands of the rest.")
@click.option("--user", "user_name", metavar="NAME",
              help="User to give access to Incus (default: the user who ran sudo, else you).")
@click.option("--no-image", is_flag=True, help="Do not build the default image.")
@click.option("--pool", default="cci", show_default=True, metavar="NAME", help="Name of the storage pool setup makes, if it makes one.")
@click.option("--pool-size", default="20GiB", show_default=True, metavar="SIZE", help="Size of that pool's loop file.")
@click.option("--bridge", default="incusbr0", show_default=True, metavar="NAME",
              help="Name of the bridge setup makes when the default profile has no network device.")
@click.option("--config-file", type=click.Path(dir_okay=False, path_type=Path), envvar="CCI_SETUP_CONFIG_FILE",
              metavar="PATH",
              help="Config file to record the network range in (default: the system config, /etc/cci/config.toml).")
@click.option("--image", metavar="NAME", help="Image to build when missing (default: [defaults] image).")
@click.option("--no-restart", is_flag=True,
              help="Never restart incusd (after delegating ids): say the command instead.")
@click.pass_context
def setup(ctx: click.Context, dry_run: bool, user_name: str | None, no_image: bool, pool: str, pool_size: str,
          bridge: str, config_file: Path | None, image: str | None, no_restart: bool) -> None:
    """Prepare this machine for cci: Incus, storage, network, your access, the image (idempotent).

    Installs Incus where missing (Debian 12, 13, Ubuntu 24.04), starts it, makes
    a btrfs storage pool and a bridge with NAT when the default profile has none,
    adds the user to incus-admin, delegates their uid and gid to root for
    raw.idmap, records a free IPv4 range for cci's policy networks in the config
    file, and builds the default image. It never changes a pool, bridge or
    profile device it did not make. Steps that need root run through sudo.
    Running it again changes nothing; --dry-run shows the plan.
    """
    from cci_builtin_plugins.incus.settings import IncusSettings

    config = current_config()
    incus = IncusSettings.of(config)
    options = Options(config_file=(config_file or system_config_file()).absolute(),
                      image=image or config.defaults.image, cci=own_command(), group=incus.group, pool=pool,
                      pool_size=pool_size, bridge=bridge, build_image=not no_image, restart=not no_restart,
                      project=incus.project)
    user = user_name or _invoking_user()
    if not dry_run and os.geteuid() == 0:
        ctx.call_on_close(_one_at_a_time().close)  # a second run waits, then finds the steps done
    plan = make_plan(_gather(user, options, config), options)
    if dry_run:
        _print_plan(plan, f"cci setup --dry-run for user {user}", sudo=os.geteuid() != 0)
        return
    if os.geteuid() != 0 and any(step.root for step in plan.pending if step.state != MANUAL):
        ctx.exit(_as_root(plan, user, options))
    Runner(plan, lambda: make_plan(_gather(user, options, config), options)).run(user)


def _one_at_a_time() -> IO[bytes]:
    """Hold setup's lock (/run/cci-setup/setup.lock) until the returned file is closed; waits for another run."""
    import fcntl

    from cci_builtin_plugins.setup.facts import PID_FILE

    PID_FILE.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    handle = open(PID_FILE.parent / "setup.lock", "ab")  # noqa: SIM115 (held until setup ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        click.echo("cci setup: waiting for another cci setup to finish", err=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _invoking_user() -> str:
    import pwd

    sudo_user = os.environ.get("SUDO_USER")
    if os.geteuid() == 0 and sudo_user:
        return sudo_user
    return pwd.getpwuid(os.getuid()).pw_name


def _gather(user: str, options: Options, config: Config) -> HostFacts:
    from cci_builtin_plugins.incus.connection import find_socket
    from cci_builtin_plugins.incus.settings import IncusSettings
    from cci_builtin_plugins.setup.facts import gather

    return gather(user=user, group=options.group, socket=find_socket(IncusSettings.of(config).socket, os.environ),
                  project=options.project, config_file=options.config_file,
                  subuid=options.subuid, subgid=options.subgid)


def _as_root(plan: Plan, user: str, options: Options) -> int:
    """Run setup again through sudo (one password prompt); without sudo, print the commands and fail."""
    from cci_builtin_plugins.incus.settings import IncusSettings

    kept = {"CCI_INCUS_PROJECT": options.project, "CCI_INCUS_GROUP": options.group}  # root reads no config of ours
    defaults = {"CCI_INCUS_PROJECT": IncusSettings().project, "CCI_INCUS_GROUP": IncusSettings().group}
    settings = [f"{name}={value}" for name, value in kept.items() if value != defaults[name]]
    argv = [*(("env", *settings) if settings else ()), *options.cci, "setup", "--user", user,
            "--config-file", str(options.config_file), "--image", options.image, "--pool", options.pool,
            "--pool-size", options.pool_size, "--bridge", options.bridge,
            *(() if options.build_image else ("--no-image",)), *(() if options.restart else ("--no-restart",))]
    needing = [step.title for step in plan.pending if step.root and step.state != MANUAL]
    if os.environ.get("SUDO_USER"):  # started by sudo, yet not root: asking sudo again would go round in circles
        raise CciError(f"{len(needing)} step(s) need root ({', '.join(needing)}), and sudo ran cci setup as "
                       f"uid {os.geteuid()}", hint=f"run it as root: sudo {shlex.join(argv)}")
    if shutil.which("sudo") is None:
        _print_plan(plan, f"cci setup for user {user} needs root", sudo=False)
        raise CciError(f"{len(needing)} step(s) need root ({', '.join(needing)}) and sudo is not installed",
                       hint=f"run the commands above as root, or as root: {shlex.join(argv)}")
    click.echo(f"cci setup: running setup again through sudo for what needs root: {', '.join(needing)}", err=True)
    return subprocess.call(["sudo", "--", *argv])


def _print_plan(plan: Plan, header: str, *, sudo: bool) -> None:
    """The plan: a header line, one line per step, and under each remaining step its commands."""
    steps = plan.steps
    pending = plan.pending
    click.echo(f"{header}: {len(steps)} steps, {len(steps) - len(pending)} done, {len(pending)} to do; "
               "nothing is changed")
    for number, step in enumerate(steps, 1):
        click.echo(_line(number, len(steps), step))
        for action in step.actions:
            click.echo(_indent(action.shell(sudo=sudo and step.root)))
    for warning in plan.warnings:
        click.echo(f"warning: {warning}")


def _line(number: int, total: int, step: Step) -> str:
    return f"[{number}/{total}] {step.title}: {step.state}: {step.detail}"


def _indent(text: str) -> str:
    return "\n".join(f"      $ {line}" if index == 0 else f"        {line}"
                     for index, line in enumerate(text.splitlines()))


class Runner:
    """Carries out a plan one step at a time, reading the facts again after steps that change Incus's state."""

    def __init__(self, plan: Plan, replan: Callable[[], Plan]) -> None:
        self.plan = plan
        self.replan = replan
        self.started = time.monotonic()

    def run(self, user: str) -> None:
        plan, index = self.plan, 0
        total = len(plan.steps)
        click.echo(f"cci setup for user {user}: {total} steps, {len(plan.pending)} to do")
        changed, manual, notes = 0, [], []
        while index < total:
            step = plan.steps[index]
            click.echo(_line(index + 1, total, step))
            if step.state == MANUAL:
                manual.append(step)
            elif step.state != DONE:
                began = time.monotonic()
                for action in step.actions:
                    click.echo(_indent(action.shell()))
                    self._run_action(index + 1, total, step, action)
                changed += 1
                click.echo(f"      done in {time.monotonic() - began:.1f} s (setup: {self._elapsed()})")
                if step.note:
                    notes.append(step.note)
                if step.refresh:
                    plan = self.replan()
            index += 1
        for warning in plan.warnings:
            click.echo(f"warning: {warning}")
        for note in notes:
            click.echo(f"note: {note}")
        summary = f"{changed} step(s) done now, {total - changed - len(manual)} done already"
        if manual:
            raise CciError(f"setup is not complete after {self._elapsed()} ({summary}): "
                           f"{'; '.join(step.title for step in manual)} needs you",
                           hint="see the step above; then run cci setup again")
        click.echo(f"cci setup: ready in {self._elapsed()} ({summary})")

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.1f} s"

    def _run_action(self, number: int, total: int, step: Step, action: Action) -> None:
        try:
            result = subprocess.run(action.argv, input=action.stdin, text=True, check=False,
                                    stdout=subprocess.DEVNULL if action.stdin is not None else None)
        except OSError as exc:
            raise CciError(f"step {number}/{total} ({step.title}) failed: cannot run {action.argv[0]}: "
                           f"{exc.strerror}", hint="fix that, then run cci setup again") from None
        if result.returncode != 0 and action.own:  # its own 'cci:' line above says what failed and how to fix it
            raise CciError(f"step {number}/{total} ({step.title}) stopped with exit code {result.returncode}",
                           hint="then run cci setup again")
        if result.returncode != 0:
            raise CciError(f"step {number}/{total} ({step.title}) failed: '{action.shell()}' exited with "
                           f"{result.returncode}", hint="see its output above; then run cci setup again")

