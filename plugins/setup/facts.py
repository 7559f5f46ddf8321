"""What ``cci setup`` needs to know about this machine, gathered read-only (the plan in :mod:`.plan` is pure).

Nothing here changes the machine or needs root: the files read are world-readable, and
Incus's state is read through its socket when this user may use it (else it is None).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from cci_builtin_plugins.incus.doctor import delegated
from cci_builtin_plugins.setup.subnets import IPv4Network, parse_ip_routes, parse_proc_route

OS_RELEASE = Path("/etc/os-release")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
SOURCES_LIST = Path("/etc/apt/sources.list")
BACKPORTS_FILE = Path("/etc/apt/sources.list.d/cci-backports.sources")
INCUSD = Path("/usr/libexec/incus/incusd")
#: where cci setup keeps the pid and the log of an incusd it starts itself (no systemd)
PID_FILE = Path("/run/cci-setup/incusd.pid")
LOG_FILE = Path("/var/log/cci-setup-incusd.log")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: the Incus config key (and description) that marks the pools and networks cci setup made
MARK_KEY = "user.cci.setup"
MARK_DESCRIPTION = "made by cci setup"

SYSTEMD = "systemd"
SETUP = "cci setup"
OTHER = "another program"


class Distro(NamedTuple):
    """``/etc/os-release``: ID, VERSION_ID, VERSION_CODENAME and PRETTY_NAME."""

    id: str
    version_id: str
    codename: str
    pretty: str


class Daemon(NamedTuple):
    """The running incusd, if any: its pid, when it started (epoch seconds), and who manages it."""

    running: bool
    pid: int | None = None
    started: float | None = None
    manager: str | None = None  # SYSTEMD, SETUP or OTHER


class Pool(NamedTuple):
    name: str
    driver: str
    by_setup: bool


class Network(NamedTuple):
    name: str
    type: str
    managed: bool
    address: ipaddress.IPv4Interface | None
    by_setup: bool


class IncusState(NamedTuple):
    """What Incus holds: pools, the default profile's devices, networks, and image aliases."""

    pools: dict[str, Pool]
    devices: dict[str, dict[str, str]]
    networks: dict[str, Network]
    images: frozenset[str]


class User(NamedTuple):
    """The user setup prepares: name, ids, and whether /etc/group lists them in the Incus group."""

    name: str
    uid: int
    gid: int
    in_group: bool


class HostFacts(NamedTuple):
    distro: Distro
    mirror: str
    signed_by: str
    backports_file: bool
    incus_installed: bool
    btrfs_tools: bool
    systemd: bool
    daemon: Daemon
    incus: IncusState | None  # None: Incus not running, or its socket not usable by this user
    user: User
    subids_delegated: bool
    subids_changed: float  # the last change of /etc/subuid or /etc/subgid (epoch seconds; 0 when missing)
    subids_unterminated: tuple[bool, bool]  # whether /etc/subuid, /etc/subgid end without a newline
    routes: tuple[IPv4Network, ...]
    config_text: str | None  # the config file setup records the network range in; None when missing
    config_readable: bool  # False: it exists but this user may not read it
    config_dir: bool  # its directory exists
    config_writable: bool  # this user may write it (or create it)
    is_root: bool
    sudo: bool


# --- reading the host ----------------------------------------------------------------------------------------


def read_os_release(path: Path = OS_RELEASE) -> Distro:
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"').strip("'")
    return Distro(values.get("ID", ""), values.get("VERSION_ID", ""), values.get("VERSION_CODENAME", ""),
                  values.get("PRETTY_NAME", values.get("ID", "this distribution") or "this distribution"))


def read_apt_source(deb822: Path = DEBIAN_SOURCES, legacy: Path = SOURCES_LIST) -> tuple[str, str]:
    """The host's Debian mirror and keyring (``Signed-By``), for a backports source that matches them."""
    mirror = keyring = ""
    try:
        for line in deb822.read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "URIs" and not mirror:
                mirror = value.split()[0] if value.split() else ""
            elif key == "Signed-By" and not keyring:
                keyring = value.strip()
    except OSError:
        try:
            for line in legacy.read_text().splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[0] == "deb" and "security" not in fields[1] and not mirror:
                    mirror = next((field for field in fields[1:] if "://" in field), "")
        except OSError:
            pass
    return mirror or DEFAULT_MIRROR, keyring or DEFAULT_KEYRING


def read_routes() -> tuple[IPv4Network, ...]:
    """The host's IPv4 routes in every routing table (``ip``), else in the main one (/proc/net/route)."""
    import subprocess

    ip = shutil.which("ip")
    if ip is not None:
        try:
            result = subprocess.run([ip, "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                                    timeout=10, check=False)
            if result.returncode == 0:
                return tuple(parse_ip_routes(result.stdout))
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        return tuple(parse_proc_route(Path("/proc/net/route").read_text()))
    except OSError:
        return ()


def find_daemon(pid_file: Path = PID_FILE, systemd: bool = False) -> Daemon:
    """The main incusd process (not its ``fork*`` helpers), from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if Path(argv[0].decode(errors="replace")).name != "incusd" or any(arg.startswith(b"fork") for arg in argv[1:]):
            continue
        if "\nState:\tZ" in status:
            continue
        pid = int(entry.name)
        return Daemon(True, pid, _start_time(pid), _manager(pid, pid_file, systemd))
    return Daemon(False)


def _start_time(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def _manager(pid: int, pid_file: Path, systemd: bool) -> str:
    try:
        if int(pid_file.read_text().strip()) == pid:
            return SETUP
    except (OSError, ValueError):
        pass
    if systemd:
        try:
            if "incus" in Path(f"/proc/{pid}/cgroup").read_text():
                return SYSTEMD
        except OSError:
            pass
    return OTHER


def is_systemd() -> bool:
    """Whether PID 1 is systemd (containers and these machines run something else)."""
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def read_user(name: str, group: str) -> User:
    import grp
    import pwd

    from cci_core.api import UsageError

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"no user named {name!r} on this machine", hint="give an existing one with --user") from None
    try:
        group_entry = grp.getgrnam(group)
        member = name in group_entry.gr_mem or entry.pw_gid == group_entry.gr_gid
    except KeyError:
        member = False
    return User(name, entry.pw_uid, entry.pw_gid, member)


def read_incus(socket: Path, project: str) -> IncusState | None:
    """Incus's pools, default profile, networks and images; None when its socket cannot be used from here."""
    if not (socket.exists() and os.access(socket, os.R_OK | os.W_OK)):
        return None
    from cci_core.api import CciError
    from cci_builtin_plugins.incus.connection import Endpoint
    from cci_builtin_plugins.incus.rest import IncusAPI

    api = IncusAPI(Endpoint(socket=socket), project)
    try:
        pools = {pool["name"]: Pool(pool["name"], pool.get("driver", ""), _marked(pool))
                 for pool in api.get("/1.0/storage-pools", "listing storage pools", recursion=1) or []}
        profile = api.get("/1.0/profiles/default", "reading the default profile") or {}
        networks = {network["name"]: _network(network)
                    for network in api.get("/1.0/networks", "listing networks", recursion=1) or []}
        aliases = frozenset(alias["name"] for alias in api.get("/1.0/images/aliases", "listing image aliases",
                                                               recursion=1) or [])
    except CciError:
        return None
    return IncusState(pools, dict(profile.get("devices") or {}), networks, aliases)


def _marked(item: dict[str, Any]) -> bool:
    return (item.get("config") or {}).get(MARK_KEY) == "true"


def _network(network: dict[str, Any]) -> Network:
    address = (network.get("config") or {}).get("ipv4.address", "")
    try:
        interface = ipaddress.IPv4Interface(address) if "/" in address else None
    except ValueError:
        interface = None
    return Network(network["name"], network.get("type", ""), bool(network.get("managed")), interface,
                   _marked(network))


def _mtime(*paths: Path) -> float:
    times = []
    for path in paths:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return max(times, default=0.0)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _unterminated(path: Path) -> bool:
    """Whether ``path`` has a last line without its newline (a line appended to it would join that one)."""
    try:
        text = path.read_bytes()
    except OSError:
        return False
    return bool(text) and not text.endswith(b"\n")


def _writable(path: Path) -> bool:
    """Whether this user may write ``path``, or create it (and the directories it needs)."""
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent
    return os.access(target, os.W_OK)


def gather(*, user: str, group: str, socket: Path, project: str, config_file: Path,
           subuid: Path, subgid: Path) -> HostFacts:
    """Read everything :func:`~cci_builtin_plugins.setup.plan.make_plan` needs."""
    systemd = is_systemd()
    person = read_user(user, group)
    mirror, keyring = read_apt_source()
    try:
        config_text, config_readable = read_text(config_file), True
    except OSError:
        config_text, config_readable = None, False
    return HostFacts(
        distro=read_os_release(),
        mirror=mirror,
        signed_by=keyring,
        backports_file=BACKPORTS_FILE.exists(),
        incus_installed=bool(shutil.which("incus")) and INCUSD.exists(),
        btrfs_tools=bool(shutil.which("mkfs.btrfs") or Path("/usr/sbin/mkfs.btrfs").exists()
                         or Path("/sbin/mkfs.btrfs").exists()),
        systemd=systemd,
        daemon=find_daemon(PID_FILE, systemd),
        incus=read_incus(socket, project),
        user=person,
        subids_delegated=delegated(subuid, person.uid) and delegated(subgid, person.gid),
        subids_changed=_mtime(subuid, subgid),
        subids_unterminated=(_unterminated(subuid), _unterminated(subgid)),
        routes=read_routes(),
        config_text=config_text,
        config_readable=config_readable,
        config_dir=config_file.parent.is_dir(),
        config_writable=_writable(config_file),
        is_root=os.geteuid() == 0,
        sudo=bool(shutil.which("sudo")),
    )
