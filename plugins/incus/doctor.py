"""The Incus checks of ``cci doctor`` (the hook ``cci_doctor_checks`` in :mod:`.plugin` calls them).

Each check is independent and never raises: a problem is a ``fail`` (or
``warn``) :class:`~cci_core.doctor.Check` carrying the fix. One connection
and one read of the default profile are shared by the checks. When Incus
cannot be reached, the checks that need it are replaced by one ``warn`` line
named ``skipped`` (the ``incus reachable`` line already fails the run).

They use cci's own REST client (:mod:`.rest`), as the driver does, imported only when connecting.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cci_core.api import (
    FAIL,
    OK,
    CciError,
    Check,
    NotFoundError,
    check_fail as fail,
    check_ok as ok,
    check_skipped as skipped,
    check_warn as warn,
    guarded,
)
from cci_builtin_plugins.incus.connection import find_socket, quote, resolve_endpoint
from cci_builtin_plugins.incus.idmap import UserMap
from cci_builtin_plugins.incus.login_group import listed_in_group
from cci_builtin_plugins.incus.settings import IncusSettings

if TYPE_CHECKING:
    from cci_builtin_plugins.incus.rest import IncusAPI

    from cci_core.api import Config

#: the driver name these checks are for: they run only when ``[defaults] driver`` is this
DRIVER = "incus"
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")

#: storage drivers on which every launch copies the whole image instead of a cheap snapshot
COPYING_DRIVERS = frozenset({"dir"})

INSTALLED = "incus installed"
GROUP = "incus group"
REACHABLE = "incus reachable"
PROJECT = "incus project"
STORAGE = "storage"
NETWORK = "network"
ACLS = "network acls"
SUBNETS = "policy subnets"
IDMAPPED = "idmapped mounts"
UID_MAPPING = "uid mapping"
IMAGE = "image"
PROXY_IMAGE = "proxy image"

#: the checks that need a connection, in the order they are printed
NEED_CONNECTION = (PROJECT, STORAGE, NETWORK, ACLS, SUBNETS, IDMAPPED, IMAGE, PROXY_IMAGE)

INSTALL_FIX = ("run 'cci setup' (it installs and starts Incus), or install Incus "
               "(https://linuxcontainers.org/incus/docs/main/installing/) and start it ('sudo systemctl start incus')")
RESTART_FIX = "then restart Incus ('sudo systemctl restart incus')"
#: the fix of what ``cci setup`` prepares (it says the exact commands with --dry-run)
SETUP_FIX = "run 'cci setup'"
#: the name of the bridge :func:`subnet_check` makes to see whether Incus can pick a subnet (deleted at once)
PROBE_PREFIX = "ccidoctor"
PROBE_DESCRIPTION = "cci doctor:"
#: the IPv4 routes of the host (a recorded range must stay clear of them)
ROUTES = Path("/proc/net/route")


def incus_checks(config: Config, environ: Mapping[str, str], *, uid: int | None = None, gid: int | None = None,
                 subuid: Path = SUBUID, subgid: Path = SUBGID) -> list[Check]:
    """Every Incus check, in order (``uid``, ``gid`` and the subid files are parameters for tests)."""
    incus = IncusSettings.of(config)
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    server = _Server(config, environ)

    checks = [guarded(INSTALLED, installed_check, config, environ)]
    local_socket_missing = checks[0].status == FAIL and not incus.url
    if not local_socket_missing:
        checks.append(guarded(GROUP, group_check, incus, environ, uid=uid))
    reachable = guarded(REACHABLE, reachable_check, server)
    checks.append(reachable)
    if reachable.status != OK:
        checks.append(guarded(UID_MAPPING, uid_mapping_check, incus, uid=uid, gid=gid,
                              subuid=subuid, subgid=subgid))
        names = ([GROUP] if local_socket_missing else []) + list(NEED_CONNECTION)
        checks.append(skipped(names, "Incus is not reachable",
                              f"resolve '{INSTALLED if local_socket_missing else REACHABLE}' first, then run "
                              "'cci doctor' again"))
        return checks
    idmapped = guarded(IDMAPPED, idmapped_check, server)
    checks += [
        guarded(PROJECT, project_check, server),
        guarded(STORAGE, storage_check, server),
        guarded(NETWORK, network_check, server),
        guarded(ACLS, acl_check, server, config),
        guarded(SUBNETS, subnet_check, server, config),
        idmapped,
        guarded(UID_MAPPING, uid_mapping_check, incus, uid=uid, gid=gid, subuid=subuid, subgid=subgid),
        guarded(IMAGE, image_check, server, config.defaults.image, config.tool.name),
        guarded(PROXY_IMAGE, proxy_image_check, server, config.network.proxy_image, config.network.mode),
    ]
    return checks


class _Server:
    """The connection and the default profile, each made once and shared by the checks."""

    def __init__(self, config: Config, environ: Mapping[str, str]) -> None:
        self.config = config
        self.settings = IncusSettings.of(config)
        self.environ = environ

    @cached_property
    def api(self) -> IncusAPI:
        from cci_builtin_plugins.incus.rest import IncusAPI

        return IncusAPI(resolve_endpoint(self.settings, self.environ), self.settings.project)

    @cached_property
    def host_info(self) -> dict[str, Any]:
        """``GET /1.0``: the server's environment and whether it trusts us."""
        return dict(self.api.get("/1.0", "connecting to Incus") or {})

    @property
    def project(self) -> str:
        return self.settings.project

    def read(self, action: str, *path: str) -> Any:
        """GET ``/1.0/<path...>`` (each segment quoted) and return its metadata; errors become CciErrors."""
        return self.api.get("/".join(["/1.0", *(quote(segment) for segment in path)]), action)

    @cached_property
    def profile(self) -> dict[str, Any]:
        return self.read("reading the default profile", "profiles", "default")

    @property
    def devices(self) -> dict[str, dict[str, str]]:
        return dict(self.profile.get("devices") or {})

    def project_flag(self) -> str:
        """`` --project X`` for fixes that are incus commands, when not the default project."""
        return f" --project {self.project}" if self.project != "default" else ""


# --- the checks ------------------------------------------------------------------------------------------------


def installed_check(config: Config, environ: Mapping[str, str]) -> Check:
    """Incus's unix socket exists, or a remote ``[incus] url`` is set."""
    incus = IncusSettings.of(config)
    if incus.url:
        via = f"remote {incus.remote!r} of the incus CLI" if incus.remote else "[incus] url"
        return ok(INSTALLED, f"remote Incus at {incus.url} ({via})")
    socket = find_socket(incus.socket, environ)
    setting, origin = _socket_setting(config, environ)
    chosen = f" ({setting}, set by {origin})" if setting else ""
    if not socket.exists():
        if setting:
            return fail(INSTALLED, f"no Incus socket at {socket}{chosen}",
                        f"correct or unset {setting}; if Incus is not installed: {INSTALL_FIX}")
        return fail(INSTALLED, f"no Incus socket at {socket}", f"{INSTALL_FIX}, or set [incus] socket")
    if not stat.S_ISSOCK(socket.stat().st_mode):
        return fail(INSTALLED, f"{socket} is not a socket{chosen}",
                    f"set {setting or '[incus] socket'} to Incus's unix socket, e.g. /var/lib/incus/unix.socket")
    return ok(INSTALLED, f"socket {socket}{chosen}")


def _socket_setting(config: Config, environ: Mapping[str, str]) -> tuple[str, str] | tuple[None, None]:
    """What chose the socket and where it was set: ``([incus] socket, <source>)``, ``INCUS_SOCKET``, or nothing."""
    if IncusSettings.of(config).socket:
        try:
            return "[incus] socket", config.source_of("incus.socket")
        except KeyError:
            return "[incus] socket", "the config"
    if environ.get("INCUS_SOCKET"):
        return "INCUS_SOCKET", "the environment"
    return None, None


def group_check(incus: IncusSettings, environ: Mapping[str, str], *, uid: int) -> Check:
    """This user may read and write the socket; if not, whether joining ``[incus] group`` (or logging in again) fixes it."""
    if incus.url:
        return ok(GROUP, "not needed for a remote Incus (client certificate)")
    socket = find_socket(incus.socket, environ)
    group = incus.group
    if os.access(socket, os.R_OK | os.W_OK):
        return ok(GROUP, access_reason(socket, uid, {*os.getgroups(), os.getgid()}))
    if listed_in_group(group, uid):
        return fail(GROUP, f"no read/write access to {socket}: you were added to group {group}, but this login "
                           "session started before that", f"log out and in again (or run 'newgrp {group}')")
    return fail(GROUP, f"no read/write access to {socket}: you are not in group {group}",
                f"run 'cci setup' (or 'sudo usermod -aG {group} $USER'), then log out and in again")


def access_reason(socket: Path, uid: int, groups: Collection[int]) -> str:
    """Why an accessible socket is accessible: root, owner, one of ``groups`` (the user's gids), or open to all."""
    info = socket.stat()
    if uid == 0:
        return f"running as root: {socket} is usable"
    if info.st_uid == uid:
        return f"you own {socket}"
    if info.st_gid in groups:
        return f"you are in group {_group_name(info.st_gid)}, which may use {socket}"
    return f"{socket} is open to every user"


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def reachable_check(server: _Server) -> Check:
    """Connect and read the server's version; the client must be trusted."""
    try:
        info = server.host_info
    except CciError as exc:
        return fail(REACHABLE, exc.message, exc.hint or "check that Incus runs: 'sudo systemctl status incus'")
    environment = info.get("environment") or {}
    incus = server.settings
    where = incus.url or str(find_socket(incus.socket, server.environ))
    if info.get("auth") != "trusted":
        return fail(REACHABLE, f"connected to {where}, but Incus does not trust this client "
                               f"(auth: {info.get('auth')})",
                    "on the server: 'incus config trust add-certificate <your [incus] client_cert>'")
    return ok(REACHABLE, f"{environment.get('server', 'incus')} {environment.get('server_version', '?')} "
                         f"(API {info.get('api_version', '?')}) on {where}")


def project_check(server: _Server) -> Check:
    """The configured project exists."""
    try:
        server.read(f"reading project {server.project}", "projects", server.project)
    except NotFoundError:
        return fail(PROJECT, f"project {server.project!r} does not exist",
                    f"'incus project create {server.project}', or set [incus] project to an existing one")
    return ok(PROJECT, server.project)


def root_disk(devices: Mapping[str, Mapping[str, str]]) -> tuple[str, Mapping[str, str]] | None:
    """The profile's root disk: ``(device name, device)`` of the disk mounted at ``/``, or None."""
    for name, device in sorted(devices.items()):
        if device.get("type") == "disk" and device.get("path") == "/":
            return name, device
    return None


def pool_driver_check(pool: str, driver: str) -> Check:
    """ok for a copy-on-write pool; ``warn`` for ``dir``, where every launch copies the whole image."""
    if driver in COPYING_DRIVERS:
        return warn(STORAGE, f"pool {pool} uses the {driver} driver: every launch copies the whole image "
                             "(slow, and a full copy on disk per container)",
                    "create a btrfs or zfs pool ('incus storage create cci btrfs') and move the default "
                    "profile's root disk to it ('incus profile device set default root pool=cci')")
    return ok(STORAGE, f"pool {pool} ({driver})")


def storage_check(server: _Server) -> Check:
    """The default profile has a root disk on an existing pool, and that pool is not ``dir``."""
    found = root_disk(server.devices)
    if found is None:
        pools = _pool_names(server)
        if pools:
            fix = f"incus profile device add default root disk path=/ pool={pools[0]}{server.project_flag()}"
        else:
            fix = (f"incus storage create default btrfs, then incus profile device add default root disk path=/ "
                   f"pool=default{server.project_flag()}")
        return fail(STORAGE, "the default profile has no root disk, so containers cannot be created", fix)
    device_name, device = found
    pool = device.get("pool")
    if not pool:
        return fail(STORAGE, f"the default profile's root disk {device_name!r} names no pool",
                    f"incus profile device set default {device_name} pool=<pool>{server.project_flag()} "
                    "(see 'incus storage list')")
    try:
        info = server.read(f"reading storage pool {pool}", "storage-pools", pool)
    except NotFoundError:
        return fail(STORAGE, f"the default profile's root disk uses pool {pool!r}, which does not exist",
                    f"'incus storage create {pool} btrfs', or point the root disk at an existing pool: "
                    f"'incus profile device set default {device_name} pool=<pool>{server.project_flag()}'")
    return pool_driver_check(pool, str(info.get("driver", "unknown")))


def _pool_names(server: _Server) -> list[str]:
    """Names of the storage pools (the API lists them as ``/1.0/storage-pools/<name>`` URLs)."""
    return sorted(url.rstrip("/").rsplit("/", 1)[-1] for url in server.read("listing storage pools", "storage-pools"))


def network_check(server: _Server) -> Check:
    """The default profile has a nic, and each nic's network (or parent interface) exists."""
    nics = {name: device for name, device in sorted(server.devices.items()) if device.get("type") == "nic"}
    if not nics:
        return fail(NETWORK, "the default profile has no network device: containers would have no network",
                    "'incus network create incusbr0' if no bridge exists, then 'incus profile device add default "
                    f"eth0 nic network=incusbr0 name=eth0{server.project_flag()}'")
    found = []
    for name, device in nics.items():
        target = device.get("network") or device.get("parent")
        if not target:
            return fail(NETWORK, f"the default profile's nic {name!r} names no network or parent",
                        f"incus profile device set default {name} network=<network>{server.project_flag()} "
                        "(see 'incus network list')")
        try:
            info = server.read(f"reading network {target}", "networks", target)
        except NotFoundError:
            return fail(NETWORK, f"the default profile's nic {name!r} uses network {target!r}, which does not exist",
                        f"'incus network create {target}', or point the nic at an existing network: "
                        f"'incus profile device set default {name} network=<network>{server.project_flag()}'")
        found.append(f"{name} on {target} ({info.get('type', 'unknown')})")
    return ok(NETWORK, ", ".join(found))


def acl_check(server: _Server, config: Config) -> Check:
    """Network policies other than ``open`` need network ACLs (enforced on a bridge per policy)."""
    mode = config.network.mode
    if mode == "open":
        return ok(ACLS, "not needed: the network policy is open")
    if "network_acl" not in (server.host_info.get("api_extensions") or ()):
        return fail(ACLS, f"this Incus has no network ACLs (API extension network_acl): policy {mode!r} "
                          "cannot be enforced", "upgrade Incus, or set [network] mode = \"open\" for trusted projects")
    incus = IncusSettings.of(config)
    subnets = "subnets picked by Incus" if incus.network_subnets == "auto" else f"subnets from {incus.network_subnets}"
    return ok(ACLS, f"supported: {mode!r} gets a bridge of its own (NAT {'on' if incus.network_nat else 'off'}, "
                    f"{subnets}; see 'cci network list')")


def subnet_check(server: _Server, config: Config) -> Check:
    """A policy network can actually be made: a free /24 is left in ``[incus] network_subnets``, or (``auto``)
    Incus picks a subnet for a probe bridge made and deleted at once (on some machines it never can: "Incus
    could not find a free IPv4 subnet")."""
    mode = config.network.mode
    if mode == "open":
        return ok(SUBNETS, "not needed: the network policy is open")
    from cci_builtin_plugins.incus.networks import PREFIX, PolicyNetworks

    subnets = IncusSettings.of(config).network_subnets
    if subnets != "auto":
        free = PolicyNetworks(server.api, IncusSettings.of(config)).subnets_to_try(PREFIX + mode)
        if not free:
            return fail(SUBNETS, f"no free /24 left in [incus] network_subnets ({subnets}, set by "
                                 f"{_source(config, 'incus.network_subnets')}): no policy network can be made",
                        f"remove that setting and {SETUP_FIX} (it records a free range), or set a larger range")
        route = _route_into(subnets, server)
        if route is not None:
            return warn(SUBNETS, f"the host has a route to {route} inside [incus] network_subnets ({subnets}, set by "
                                 f"{_source(config, 'incus.network_subnets')}): cci's networks there would cut it off",
                        f"set it to a free range (remove it and {SETUP_FIX}, which records one)")
        return ok(SUBNETS, f"free /24s left in {subnets} (next: {free[0]})")
    if not _incus_picks_a_subnet(server):
        return fail(SUBNETS, "[incus] network_subnets is auto, but Incus cannot find a free IPv4 subnet for a new "
                             "bridge here: no policy network can be made", f"{SETUP_FIX} (it records a free range)")
    return ok(SUBNETS, "Incus picks them (checked with a bridge made and deleted at once)")


def _route_into(subnets: str, server: _Server) -> str | None:
    """A route of the host (not one of Incus's bridges) into the recorded range, e.g. a VPN's since setup."""
    import ipaddress

    from cci_builtin_plugins.setup.subnets import parse_proc_route

    try:
        routes = parse_proc_route(ROUTES.read_text())
    except OSError:
        return None
    bridges = set()
    for network in server.api.get("/1.0/networks", "listing networks", recursion=1) or []:
        address = (network.get("config") or {}).get("ipv4.address", "")
        if network.get("managed") and "/" in address:
            bridges.add(ipaddress.IPv4Interface(address).network)
    recorded = ipaddress.IPv4Network(subnets)
    return next((str(route) for route in routes if route not in bridges and route.overlaps(recorded)), None)


def _incus_picks_a_subnet(server: _Server) -> bool:
    """Make a bridge with ``ipv4.address=auto`` (no NAT, no IPv6) and delete it: False when Incus cannot pick.

    Probes an interrupted doctor left behind are deleted first; an interrupted probe is deleted at once (Incus
    may have made it although the request was cut off); one another doctor deleted meanwhile is no error.
    """
    from cci_builtin_plugins.incus.errors import APIError
    from cci_builtin_plugins.incus.networks import _NO_AUTO_SUBNET

    name = f"{PROBE_PREFIX}{os.getpid() % 100000}"
    for network in server.api.get("/1.0/networks", "listing networks", recursion=1) or []:
        if str(network.get("name", "")).startswith(PROBE_PREFIX) and not network.get("used_by") \
                and str(network.get("description", "")).startswith(PROBE_DESCRIPTION):
            _delete_probe(server, network["name"])
    body = {"name": name, "type": "bridge", "description": f"{PROBE_DESCRIPTION} can Incus pick a subnet? "
                                                           "(deleted at once)",
            "config": {"ipv4.address": "auto", "ipv4.nat": "false", "ipv6.address": "none"}}
    try:
        server.api.call("POST", "/1.0/networks", f"creating network {name}", body)
    except APIError as exc:
        if _NO_AUTO_SUBNET in exc.detail:
            return False
        raise
    except BaseException:
        _delete_probe(server, name)
        raise
    _delete_probe(server, name, quiet=False)
    return True


def _delete_probe(server: _Server, name: str, *, quiet: bool = True) -> None:
    """Delete the probe bridge ``name``; gone already is fine; other errors only raise when not ``quiet``."""
    try:
        server.api.call("DELETE", f"/1.0/networks/{quote(name)}", f"deleting network {name}")
    except NotFoundError:
        pass
    except CciError:
        if not quiet:
            raise


def _source(config: Config, key: str) -> str:
    try:
        return config.source_of(key)
    except KeyError:
        return "the config"


def idmapped_check(server: _Server) -> Check:
    """The server's kernel supports idmapped mounts (``shift=true`` workspace disks)."""
    environment = server.host_info.get("environment") or {}
    features = environment.get("kernel_features") or {}
    kernel = environment.get("kernel_version", "unknown")
    if features.get("idmapped_mounts") == "true":
        return ok(IDMAPPED, f"supported by the kernel ({kernel})")
    return warn(IDMAPPED, f"not supported by the kernel ({kernel}): cci run as root cannot mount the workspace "
                          "(other users are mapped with raw.idmap and do not need them)",
                "run cci as a regular user, or use a newer kernel (6.x)")


def delegated(path: Path, host_id: int, owners: Collection[str] = ("root", "0")) -> bool:
    """Whether ``path`` (/etc/subuid or /etc/subgid) delegates ``host_id`` to root: a ``root:start:count`` covering it.

    A missing file delegates nothing; malformed lines are ignored, as shadow-utils does.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return False
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in owners:
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start <= host_id < start + count:
            return True
    return False


def uid_mapping_check(incus: IncusSettings, *, uid: int, gid: int,
                      subuid: Path = SUBUID, subgid: Path = SUBGID) -> Check:
    """cci maps the user with ``raw.idmap``, which needs their uid and gid delegated to root in /etc/subuid and
    /etc/subgid (see :mod:`cci_builtin_plugins.incus.idmap`)."""
    user_map = UserMap(uid, gid, incus.container_uid)
    if not user_map.needs_raw_idmap():
        return ok(UID_MAPPING, "running as root: workspace files keep their owners, no mapping needed")
    reason = (f"cci maps your uid {uid} onto the container user ({incus.container_uid}) with raw.idmap, so that root "
              "in the container cannot own files on the host")
    if incus.url:
        return warn(UID_MAPPING, f"{reason}; the remote server's /etc/subuid and /etc/subgid cannot be checked "
                                 "from here", f"on the server: {user_map.delegation_hint()}")
    missing = [f"'root:{number}:1' to {path}" for number, path in ((uid, subuid), (gid, subgid))
               if not delegated(path, number)]
    if missing:
        return fail(UID_MAPPING, f"{reason}; Incus allows that only for ids delegated to root in {subuid} and "
                                 f"{subgid}, and yours are not",
                    f"run 'cci setup' (or add {' and '.join(missing)}, {RESTART_FIX})")
    return ok(UID_MAPPING, f"{reason}; root delegates uid {uid} in {subuid} and gid {gid} in {subgid}")


def image_check(server: _Server, alias: str, tool: str = "claude") -> Check:
    """The configured image alias (``[defaults] image``) exists and records the version of ``tool`` it carries."""
    try:
        target = server.read(f"looking up image {alias}", "images", "aliases", alias).get("target", "")
    except NotFoundError:
        return fail(IMAGE, f"image {alias!r} not found in project {server.project}",
                    f"{SETUP_FIX} (it builds the image) or 'cci build', or choose another with --image or "
                    "[defaults] image")
    from cci_core.api import tool_version_property

    key = tool_version_property(tool)
    version = (server.read(f"reading image {alias}", "images", target).get("properties") or {}).get(key)
    if not version:
        rebuild = "cci build --force" if alias == "cci" else f"cci build --alias {alias} --force"
        return warn(IMAGE, f"{alias} ({target[:12]}) records no {tool} version (image property {key}): it may "
                           f"not carry {tool}", f"rebuild it with '{rebuild}', or choose another with --image or "
                                                "[defaults] image")
    return ok(IMAGE, f"{alias} ({target[:12]}) with {tool} {version}")



def proxy_image_check(server: _Server, alias: str, mode: str) -> Check:
    """The proxy image (``[network] proxy_image``) exists: a warning without it, a failure if this config's mode
    needs it now (``proxy``; an allowlist with patterns needs it too, but that takes making its plan)."""
    try:
        target = server.read(f"looking up image {alias}", "images", "aliases", alias).get("target", "")
    except NotFoundError:
        build = "cci build proxy" if alias == "cci-proxy" else f"cci build proxy --alias {alias}"
        problem = f"image {alias!r} not found in project {server.project}: network mode proxy needs it"
        fix = f"{SETUP_FIX} (it builds the image) or 'sudo {build}'"
        return fail(PROXY_IMAGE, problem, fix) if mode == "proxy" else warn(PROXY_IMAGE, problem, fix)
    return ok(PROXY_IMAGE, f"{alias} ({target[:12]})")
