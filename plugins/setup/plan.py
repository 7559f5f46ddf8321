"""The plan of ``cci setup``: host facts in, an ordered list of steps out (pure: no I/O, so every machine state
and distribution can be tested with made-up facts).

Each :class:`Step` is done already, to do (with the exact commands), or manual (setup cannot do it itself and
says the command). A problem that stops setup altogether (no Incus package for the distribution, a name taken
by something setup did not make) raises before anything runs, so nothing is left half-made.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from cci_core.api import CciError, ConfigError, NetworkConfig, UsageError
from cci_builtin_plugins.setup import facts as host
from cci_builtin_plugins.setup.config_file import recorded, tomllib, with_setting
from cci_builtin_plugins.setup.facts import HostFacts
from cci_builtin_plugins.setup.subnets import IPv4Network, pick_bridge, pick_range

DONE = "done"
PENDING = "to do"
MANUAL = "manual"

#: packages per distribution: (ID, VERSION_ID) -> apt suite to install from ("" = the release itself)
INCUS_SUITES = {("debian", "12"): "bookworm-backports", ("debian", "13"): "", ("ubuntu", "24.04"): ""}
#: the daemon only (the ``incus`` package adds QEMU for virtual machines, which cci does not use)
INCUS_PACKAGE = "incus-base"
RANGE_SECTION, RANGE_KEY = "incus", "network_subnets"
#: launch times from a cached image measured on these machines, for the ``dir`` pool warning
DIR_SECONDS, BTRFS_SECONDS = 3.1, 0.5


class Options(NamedTuple):
    """What the command line chose."""

    config_file: Path
    image: str
    cci: tuple[str, ...]  # how to run cci itself (for the image build)
    group: str = "incus-admin"
    pool: str = "cci"
    pool_size: str = "20GiB"
    bridge: str = "incusbr0"
    build_image: bool = True
    restart: bool = True  # False: never restart incusd, say the command instead
    project: str = "default"  # the Incus project whose default profile setup fills in
    subuid: Path = Path("/etc/subuid")
    subgid: Path = Path("/etc/subgid")


class Action(NamedTuple):
    """One command; ``stdin`` is fed to it (a file written with ``tee``); ``own``: it is cci itself, whose
    error line says what failed."""

    argv: tuple[str, ...]
    stdin: str | None = None
    own: bool = False

    def shell(self, sudo: bool = False) -> str:
        """The command as one would type it (a here-document for ``stdin``)."""
        line = shlex.join((("sudo",) if sudo else ()) + self.argv)
        if self.stdin is None:
            return line
        if self.stdin.count("\n") == 1 and self.stdin.endswith("\n"):
            return f"echo {shlex.quote(self.stdin[:-1])} | {line}"
        return f"{line} >/dev/null <<'EOF'\n{self.stdin}EOF"


class Step(NamedTuple):
    """One line of the plan: a title, its state, what was found or will be done, and the commands."""

    title: str
    state: str
    detail: str
    actions: tuple[Action, ...] = ()
    root: bool = True
    refresh: bool = False  # Incus's state is read again after this step
    note: str = ""  # said once the step is done


class Plan(NamedTuple):
    steps: tuple[Step, ...]
    warnings: tuple[str, ...]

    @property
    def pending(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.state != DONE)


def make_plan(facts: HostFacts, options: Options) -> Plan:
    """Every step in order; raises a :class:`~cci_core.errors.CciError` for a problem that stops setup before it changes anything."""
    warnings: list[str] = []
    steps = [
        install_step(facts),
        group_step(facts, options),
        subids_step(facts, options),
        start_step(facts),
        restart_step(facts, options),
        pool_step(facts, options, warnings),
        network_step(facts, options),
        range_step(facts, options),
        image_step(facts, options),
        proxy_image_step(facts, options),
    ]
    return Plan(tuple(steps), tuple(warnings))


def run(*argv: str, stdin: str | None = None) -> Action:
    return Action(tuple(argv), stdin)


# --- the steps -----------------------------------------------------------------------------------------------


def install_step(facts: HostFacts) -> Step:
    title = "install Incus"
    missing = ([] if facts.incus_installed else [INCUS_PACKAGE]) + ([] if facts.btrfs_tools else ["btrfs-progs"])
    if not missing:
        return Step(title, DONE, "incus and incusd are installed, and mkfs.btrfs")
    distro = facts.distro
    suite = INCUS_SUITES.get((distro.id, distro.version_id))
    if suite is None:
        raise CciError(f"no Incus package known for {distro.pretty}; install Incus yourself "
                                f"({' '.join(missing)}), then run cci setup again",
                                hint="https://linuxcontainers.org/incus/docs/main/installing/")
    actions = []
    if suite and not facts.backports_file:
        actions.append(run("tee", str(host.BACKPORTS_FILE), stdin=(
            f"# Added by cci setup: Incus comes from {suite} on {distro.pretty}\n"
            f"Types: deb\nURIs: {facts.mirror}\nSuites: {suite}\nComponents: main\nSigned-By: {facts.signed_by}\n")))
    actions.append(run("apt-get", "update", "-q"))
    target = ("-t", suite) if suite and INCUS_PACKAGE in missing else ()
    actions.append(run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                       "--no-install-recommends", *target, *missing))
    source = f"{suite}" if suite else f"{distro.pretty}"
    return Step(title, PENDING, f"install {' and '.join(missing)} from {source} (about a minute)", tuple(actions),
                refresh=True)


def group_step(facts: HostFacts, options: Options) -> Step:
    user, group = facts.user, options.group
    title = f"add {user.name} to {group}"
    if user.uid == 0:
        return Step(title, DONE, "root uses Incus without a group")
    if user.in_group:
        return Step(title, DONE, f"{user.name} is in {group}")
    return Step(title, PENDING, f"{user.name} may then use Incus's socket", (run("usermod", "-aG", group, user.name),),
                note=f"{user.name} gets the group at the next login; until then cci runs itself under 'sg {group}' "
                     f"(other programs: 'newgrp {group}')")


def subids_step(facts: HostFacts, options: Options) -> Step:
    user = facts.user
    title = f"delegate uid {user.uid} and gid {user.gid} to root"
    if user.uid == 0:
        return Step(title, DONE, "not needed for root (no raw.idmap)")
    if facts.subids_delegated:
        return Step(title, DONE, f"{options.subuid} and {options.subgid} delegate them")
    return Step(title, PENDING, f"so that Incus may map them with raw.idmap: workspace files stay {user.name}'s",
                tuple(run("tee", "-a", str(path), stdin=("\n" if unterminated else "") + f"root:{number}:1\n")
                      for path, number, unterminated in zip((options.subuid, options.subgid), (user.uid, user.gid),
                                                             facts.subids_unterminated)))


def start_actions(facts: HostFacts) -> tuple[Action, ...]:
    """Start incusd: with systemd where it is PID 1, else in its own session with a pid file and a log."""
    if facts.systemd:
        return run("systemctl", "enable", "--now", "incus.service"), run("incus", "admin", "waitready", "--timeout=60")
    start = (f"setsid {host.INCUSD} --group incus-admin >>{host.LOG_FILE} 2>&1 </dev/null & "
             f"echo $! >{host.PID_FILE}")
    return (run("mkdir", "-p", str(host.PID_FILE.parent)), run("sh", "-c", start),
            run("incus", "admin", "waitready", "--timeout=60"))


def start_step(facts: HostFacts) -> Step:
    title = "start Incus"
    daemon = facts.daemon
    if daemon.running:
        return Step(title, DONE, f"incusd runs (pid {daemon.pid}, started by {daemon.manager})")
    how = "with systemd" if facts.systemd else f"in its own session (pid in {host.PID_FILE}, log {host.LOG_FILE})"
    return Step(title, PENDING, f"start incusd {how}", start_actions(facts), refresh=True)


def restart_step(facts: HostFacts, options: Options) -> Step:
    """incusd reads /etc/subuid and /etc/subgid when it starts: restart it when they changed since."""
    title = "restart Incus for the delegated ids"
    daemon = facts.daemon
    if facts.user.uid == 0 or not daemon.running:
        return Step(title, DONE, "not needed")
    changing = not facts.subids_delegated
    if not changing and (daemon.started is None or facts.subids_changed <= daemon.started):
        return Step(title, DONE, f"incusd started after the last change of {options.subuid} and {options.subgid}")
    why = (f"{options.subuid} and {options.subgid} " + ("change now" if changing else
           f"changed at {time.strftime('%H:%M:%S', time.localtime(facts.subids_changed))}, after incusd started"))
    if daemon.manager == host.SYSTEMD and options.restart:
        return Step(title, PENDING, f"{why}: restart it with systemd", (run("systemctl", "restart", "incus.service"),))
    if daemon.manager == host.SETUP and options.restart:
        wait = (f"while [ -d /proc/{daemon.pid} ] && ! grep -q '^State:.*Z' /proc/{daemon.pid}/status 2>/dev/null; "
                "do sleep 0.1; done")
        return Step(title, PENDING, f"{why}: restart the incusd cci setup started",
                    (run("incus", "admin", "shutdown", "--timeout=60"), run("timeout", "60", "sh", "-c", wait),
                     *start_actions(facts)), refresh=True)
    sudo = "" if facts.is_root else "sudo "
    command = f"{sudo}incus admin shutdown && {sudo}{shlex.join(options.cci)} setup"
    reason = f"was started by {daemon.manager}" if options.restart else "is not restarted (--no-restart)"
    return Step(title, MANUAL, f"{why}, and incusd (pid {daemon.pid}) {reason}, so setup leaves it alone; "
                               f"restart it yourself, e.g. '{command}' (setup then starts it)")


def pool_step(facts: HostFacts, options: Options, warnings: list[str]) -> Step:
    title = "storage pool"
    incus = facts.incus
    if incus is None and facts.daemon.running:
        return _unreadable(title)
    pools = incus.pools if incus else {}
    root = next(((name, device) for name, device in sorted((incus.devices if incus else {}).items())
                 if device.get("type") == "disk" and device.get("path") == "/"), None)
    if root is not None:
        pool = pools.get(root[1].get("pool", ""))
        if pool is None:
            raise CciError(f"the default profile's root disk {root[0]!r} uses pool {root[1].get('pool')!r}, "
                             "which does not exist; setup does not change a profile device it did not make",
                             hint=f"create that pool ('incus storage create {root[1].get('pool')} btrfs') or "
                                  f"remove the device ('incus profile device remove default {root[0]}')")
        if pool.driver == "dir":
            warnings.append(
                f"storage pool {pool.name} uses the dir driver: every launch copies the whole root filesystem "
                f"(a launch from a cached image took about {DIR_SECONDS} s on dir against {BTRFS_SECONDS} s on "
                f"btrfs here); setup leaves it alone. To switch: 'incus storage create {options.pool} btrfs "
                f"size={options.pool_size}', then 'incus profile device set default {root[0]} pool={options.pool}' "
                "(with no container using the old pool)")
        return Step(title, DONE, f"the default profile's root disk is on pool {pool.name} ({pool.driver})")
    device = run("incus", "profile", "device", "add", "default", "root", "disk", "path=/", f"pool={options.pool}",
                 *_project(options))

    def create() -> tuple[Action, str]:
        return (_marked("storage", "create", options.pool, "btrfs", f"size={options.pool_size}"),
                f"create btrfs pool {options.pool} (a {options.pool_size} loop file)")

    return _own_object(title, "storage pool", options.pool, "--pool", pools.get(options.pool), create, device,
                       "put the default profile's root disk on it")


def network_step(facts: HostFacts, options: Options) -> Step:
    title = "default network"
    incus = facts.incus
    if incus is None and facts.daemon.running:
        return _unreadable(title)
    nics = sorted(name for name, device in (incus.devices if incus else {}).items() if device.get("type") == "nic")
    if nics:
        names = ", ".join(f"{name} on {(incus.devices[name].get('network') or incus.devices[name].get('parent'))}"
                          for name in nics)
        return Step(title, DONE, f"the default profile has a network device ({names})")
    networks = incus.networks if incus else {}
    device = run("incus", "profile", "device", "add", "default", "eth0", "nic", f"network={options.bridge}",
                 "name=eth0", *_project(options))

    def create() -> tuple[Action, str]:
        block = pick_bridge(_taken(facts, options))
        if block is None:
            raise CciError("no free private /24 for a bridge: every candidate overlaps a route or an Incus network",
                           hint="create a bridge yourself and add it to the default profile ('incus profile "
                                "device add default eth0 nic network=NAME name=eth0')")
        address = f"{next(block.hosts())}/{block.prefixlen}"
        return (_marked("network", "create", options.bridge, f"ipv4.address={address}", "ipv4.nat=true",
                        "ipv6.address=none"), f"create bridge {options.bridge} ({address}, NAT on)")

    return _own_object(title, "network", options.bridge, "--bridge", networks.get(options.bridge), create, device,
                       "give the default profile a network device on it")


def _own_object(title: str, kind: str, name: str, flag: str, existing: host.Pool | host.Network | None,
                create: Callable[[], tuple[Action, str]], device: Action, purpose: str) -> Step:
    """Make ``name`` (unless setup made it before) and add the profile ``device`` using it; a name taken by
    something setup did not make stops setup."""
    if existing is not None and not existing.by_setup:
        raise UsageError(f"{kind} {name!r} exists and was not made by cci setup, which never changes it",
                         hint=f"choose another name with {flag} NAME")
    if existing is not None:
        return Step(title, PENDING, f"{kind} {name} exists (made by cci setup): {purpose}", (device,))
    action, what = create()
    return Step(title, PENDING, f"{what} and {purpose}", (action, device))


def _marked(*argv: str) -> Action:
    """``incus <argv>`` creating an object marked as made by cci setup."""
    return run("incus", *argv, f"{host.MARK_KEY}=true", "--description", host.MARK_DESCRIPTION)


def range_step(facts: HostFacts, options: Options) -> Step:
    title = "IPv4 range for cci's policy networks"
    path = str(options.config_file)
    if not facts.config_readable:
        return Step(title, PENDING, f"checked as root (this user cannot read {path})")
    try:
        value = recorded(facts.config_text, RANGE_SECTION, RANGE_KEY)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})", hint="fix it, then run cci setup again") from None
    if value is not None:
        return Step(title, DONE, f"[{RANGE_SECTION}] {RANGE_KEY} = {value!r} in {path}")
    block = pick_range(_taken(facts, options, bridge=False))
    if block is None:
        raise CciError("no free private /16 for cci's policy networks: every candidate overlaps a route or an "
                         "Incus network", hint=f"set [{RANGE_SECTION}] {RANGE_KEY} in {path} to a free range")
    content = with_setting(facts.config_text, RANGE_SECTION, RANGE_KEY, str(block), path=path)
    actions = (() if facts.config_dir else (run("mkdir", "-p", str(options.config_file.parent)),))
    return Step(title, PENDING, f"{block} overlaps no route and no Incus network: record it as [{RANGE_SECTION}] "
                             f"{RANGE_KEY} in {path}", (*actions, run("tee", path, stdin=content)),
                root=not facts.config_writable)


def _image_done(title: str, alias: str, facts: HostFacts, options: Options) -> Step | None:
    """The step of an image build that needs no doing (skipped, left to root, or the image exists), or None."""
    if not options.build_image:
        return Step(title, DONE, "skipped (--no-image)")
    incus = facts.incus
    if incus is None and facts.daemon.running:
        return _unreadable(title)
    if incus is not None and alias in incus.images:
        return Step(title, DONE, f"image {alias} exists")
    return None


def image_step(facts: HostFacts, options: Options) -> Step:
    title = f"image {options.image}"
    done = _image_done(title, options.image, facts, options)
    if done:
        return done
    alias = () if options.image == "cci" else ("--alias", options.image)
    return Step(title, PENDING, "build it with 'cci build' (usually 3 to 5 minutes: it fetches a base system and the tool)",
                (Action((*options.cci, "build", *alias), own=True),))


#: the proxy image's alias when ``[network] proxy_image`` is not set
PROXY_IMAGE: str = NetworkConfig._field_defaults["proxy_image"]


def proxy_image_step(facts: HostFacts, options: Options) -> Step:
    """The image of the ``proxy`` network mode's filtering proxy (``cci build proxy``): small, so always built."""
    title = f"proxy image {PROXY_IMAGE}"
    done = _image_done(title, PROXY_IMAGE, facts, options)
    if done:
        return done
    return Step(title, PENDING, "build it with 'cci build proxy' (about a minute: squid on a minimal Debian, for "
                                "network mode proxy)", (Action((*options.cci, "build", "proxy"), own=True),))


def _project(options: Options) -> tuple[str, ...]:
    return () if options.project == "default" else ("--project", options.project)


def _unreadable(title: str) -> Step:
    return Step(title, PENDING, "checked as root (this user cannot use Incus's socket yet)")


def _taken(facts: HostFacts, options: Options, *, bridge: bool = True) -> list[IPv4Network]:
    """Networks a new range must not overlap: the host's routes, Incus's networks, and (for the bridge) the
    policy range recorded or about to be."""
    taken = list(facts.routes)
    if facts.incus:
        taken += [network.address.network for network in facts.incus.networks.values() if network.address]
    if bridge:
        try:
            value = recorded(facts.config_text, RANGE_SECTION, RANGE_KEY)
        except tomllib.TOMLDecodeError:  # reported by range_step
            value = None
        policy = IPv4Network(value) if value and value != "auto" else pick_range(taken)
        if policy is not None:
            taken.append(policy)
    return taken

