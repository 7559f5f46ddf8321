"""One Incus instance behind cci's :class:`~cci_core.driver.Container` interface."""

from __future__ import annotations

import threading
from functools import cached_property
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from cci_core.api import (
    LABEL_PREFIX,
    Backoff,
    BackendError,
    Container,
    ExecResult,
    OutputHandler,
    RunningCommand,
    TreeEntry,
    TreeLimits,
)
from cci_builtin_plugins.incus.connection import remote_mount_error
from cci_builtin_plugins.incus.errors import APIError, is_busy, is_stopped_already
from cci_builtin_plugins.incus.files import InstanceFiles
from cci_builtin_plugins.incus.instance_config import disk_device, labels_of, nic_devices
from cci_builtin_plugins.incus.rest import IncusAPI, quote

if TYPE_CHECKING:
    from cci_builtin_plugins.incus.idmap import UserMap
    from cci_builtin_plugins.incus.snapshots import InstanceSnapshots

    from cci_core.api import FileStatus, LimitsConfig, Mount, PublishedPort, SnapshotInfo

_T = TypeVar("_T")
#: seconds an update waits for the instance to be free of another operation (a shutdown holds it about 1 s)
BUSY_TIMEOUT = 30.0

#: the instance fields a PUT replaces
_WRITABLE = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description")


def _has_host_mounts(devices: Mapping[str, Mapping[str, Any]]) -> bool:
    from cci_builtin_plugins.incus.mount_check import host_disks

    return bool(host_disks(devices))


def _nested_disk(devices: Mapping[str, Mapping[str, Any]], name: str) -> bool:
    """Whether disk device ``name`` is mounted inside another disk device that mounts a host path."""
    path = str((devices.get(name) or {}).get("path", "")).rstrip("/")
    return bool(path) and (devices.get(name) or {}).get("type") == "disk" and any(
        other != name and device.get("type") == "disk" and device.get("source", "").startswith("/")
        and path.startswith(str(device.get("path", "")).rstrip("/") + "/") for other, device in devices.items())


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read()


def _own_root(instance: Mapping[str, Any]) -> dict[str, Any]:
    """The instance's own ``root`` disk device as read ({}: it has the profile's only)."""
    return dict((instance.get("devices") or {}).get("root") or {})


class IncusContainer(Container):
    """An Incus instance; every call is one REST request (or an operation waited on)."""

    def __init__(self, api: IncusAPI, instance: Mapping[str, Any], user_map: UserMap | None = None,
                 nic_filtering: bool = True, known_cas: Mapping[str, str] | None = None) -> None:
        self._api = api
        #: the proxy CAs of the networks its driver ensured (see :func:`.proxy.ca_of`)
        self._known_cas = known_cas
        self._name = str(instance["name"])
        self._config = dict(instance.get("config") or {})
        self._devices = dict(instance.get("expanded_devices") or {})
        #: its own root disk device, if it has one (not the profile's): what [limits] disk changes
        self._own_root = _own_root(instance)
        self._nic_filtering = nic_filtering
        self._path = f"/1.0/instances/{quote(self._name)}"
        #: as last read or changed by this object (mounts go in at once while it runs: see _mounts_and_config)
        self._running = str(instance.get("status", "")).lower() == "running"
        self._user_map = user_map

    @property
    def user_uid(self) -> int:
        return self._user_map.container_uid if self._user_map is not None else super().user_uid

    @property
    def name(self) -> str:
        return self._name

    def _read(self) -> dict[str, Any]:
        return dict(self._api.get(self._path, f"reading {self.name}"))

    def status(self) -> str:
        # the instance itself, not /state: that fails while the container shuts down ("Invalid PID")
        return str(self._read()["status"]).lower()

    def wait_stopped(self, timeout: float = 60) -> bool:
        """Wait for the ``instance-shutdown`` event: while systemd powers off, Incus's status flips
        between running and stopped for a moment, so a status alone is not proof."""
        from cci_builtin_plugins.incus.websocket import close_quietly, on_stop

        stopped = threading.Event()
        events = self._api.websocket(self._api.events_resource("lifecycle"), on_data=on_stop(self.name, stopped.set))
        threading.Thread(target=events.run, daemon=True).start()
        try:
            return self._settled_stopped() or stopped.wait(timeout)
        finally:
            close_quietly(events)

    def _settled_stopped(self) -> bool:
        """Stopped in both the instance's own view and the listing (they disagree while it stops)."""
        if self.status() != "stopped":
            return False
        listing = self._api.get("/1.0/instances", f"listing {self.name}", recursion=1) or []
        return any(item["name"] == self.name and item["status"] == "Stopped" for item in listing)

    def labels(self) -> Mapping[str, str]:
        return labels_of(self._config)

    def set_labels(self, labels: Mapping[str, str]) -> None:
        config = {LABEL_PREFIX + key: value for key, value in labels.items()}
        self._patch({"config": config}, f"labelling {self.name}")
        self._config.update(config)

    def compare_and_set_labels(self, expected: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        action = f"labelling {self.name}"
        for _attempt in range(10):  # unrelated updates (volatile.* keys) change the ETag too: retry
            response = self._api.request("GET", self._path, f"reading {self.name}")
            current = response.json()["metadata"]
            if any(current["config"].get(LABEL_PREFIX + key, "") != value for key, value in expected.items()):
                return False
            body = {key: current[key] for key in _WRITABLE if key in current}
            body["config"] = {**current["config"], **{LABEL_PREFIX + key: value for key, value in labels.items()}}
            headers = {"If-Match": response.headers.get("ETag", "")}
            try:
                self._when_idle(lambda: self._api.call("PUT", self._path, action, body, headers=headers))
            except APIError as exc:
                if exc.status == 412:
                    continue
                raise
            self._config = body["config"]
            return True
        raise BackendError(f"{action}: it kept changing under us")

    def _mounts_and_config(self, mounts: Sequence[Mount], *, running: bool = False) -> tuple[dict[str, str],
                                                                                            list[Mount]]:
        """Shifted mounts become a ``raw.idmap`` of the host user alone (see :mod:`.idmap`).

        Into a ``running`` container (a warm one), a read-only mount stays an idmapped one, and a writable file is
        refused: Incus adds a plain bind mount to a running container by liblxc's mount injection, which creates
        its target afresh, truncating a file that is there (a workspace file under a protection mount, through the
        workspace's own mount: the host's file), and fails on a file mounted onto itself, removing it (seen with
        Incus 6.0.4). An idmapped mount is added another way, which leaves the file alone; read-only, nothing
        can be written through it, so the reason for ``raw.idmap`` does not hold (it shows the host's ids as they
        are: a file of yours belongs to your uid there, not to the container user).
        """
        user_map = self._user_map
        if not (user_map is not None and user_map.needs_raw_idmap() and any(mount.shift for mount in mounts)):
            return {}, list(mounts)
        plain = [mount._replace(shift=False) if not (running and mount.readonly) else mount for mount in mounts]
        if running:
            files = [str(mount.source) for mount in plain if not mount.shift and not Path(mount.source).is_dir()]
            if files:
                raise BackendError(f"mounting {', '.join(files)} in {self.name}: a writable file cannot be mounted "
                                   "into a running container (Incus would empty a file at its target)",
                                   hint="stop the container first, or mount it read-only")
        return {"raw.idmap": user_map.raw_idmap()}, plain

    def configure(self, config: Mapping[str, str], mounts: Sequence[Mount], network: str | None = None) -> None:
        """One update, left out when the instance has all of it already (made with it: see :meth:`IncusDriver.create`;
        a saved one started again as it was)."""
        from cci_builtin_plugins.incus import proxy

        ca = proxy.ca_of(self._api, network, self._known_cas) if network is not None else ""
        if network is not None and not ca and self._behind_proxy():
            self._leave_proxy()  # a container reused under a plan without proxy gets its NIC back
        settings, devices = self.planned(config, mounts, network, ca)
        if any(self._config.get(key) != value for key, value in settings.items()) or \
                any(self._devices.get(name) != device for name, device in devices.items()):
            self._patch({"config": settings, "devices": devices}, f"configuring {self.name}")
            self._devices.update(devices)
            self._config.update(settings)
        if ca:
            self._trust(ca)

    def planned(self, config: Mapping[str, str], mounts: Sequence[Mount], network: str | None,
                ca: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """The config keys and devices that :meth:`configure` puts on the instance as it is now: ``mounts`` (shifted
        ones through ``raw.idmap`` where needed), ``network``'s NIC, or with the proxy's ``ca`` the proxy's devices
        instead of a NIC."""
        from cci_builtin_plugins.incus import proxy

        self._check_local(mounts)
        extra, mounts = self._mounts_and_config(mounts, running=self._running)
        devices = {mount.device: disk_device(mount) for mount in mounts}
        if _has_host_mounts({**self._devices, **devices}):
            extra["boot.autostart"] = "false"  # only cci starts it, checking its mounts (not Incus at boot)
        if ca:  # a network with a proxy: no NIC at all, squid's port on the container's loopback
            devices.update(proxy.agent_devices(self._devices, proxy.socket_path(
                proxy.socket_dir_of(self._api), self._api.project or "default", str(network))))
            extra.update(proxy.agent_environment())
            extra[proxy.AGENT_PROXY_KEY] = proxy.proxy_name(str(network))
        elif network is not None:
            devices.update(nic_devices(self._devices, network, filtering=self._nic_filtering))
        return {**config, **extra}, devices

    def apply_limits(self, limits: LimitsConfig) -> None:
        """Put ``[limits]`` on the (stopped) instance: its ``limits.*`` keys and its root disk's size (see
        :mod:`.limits`); a value Incus refuses is one line, nothing changed."""
        from cci_builtin_plugins.incus.limits import ROOT, edit_limits
        from cci_core.api import warn

        notes: list[str] = []
        known = {"config": dict(self._config), "devices": {ROOT: dict(self._own_root)} if self._own_root else {}}
        if not edit_limits(known, self._devices, limits, notes):  # as last read: no request (made under them)
            for note in dict.fromkeys(notes):
                warn(f"{self.name}: {note}")
            return
        notes.clear()
        try:
            changed = self._put_edited(f"applying [limits] to {self.name}",
                                       lambda body: edit_limits(body, self._devices, limits, notes))
        except APIError as exc:
            raise BackendError(str(exc), hint="Incus refused a value of [limits]: change it in the config, or with "
                                              "--limit KEY=VALUE") from exc
        for note in dict.fromkeys(notes):
            warn(f"{self.name}: {note}")
        if not changed:
            return  # (a warm container: made under them)
        current = self._read()
        self._config, self._devices = dict(current.get("config") or {}), dict(current.get("expanded_devices") or {})
        self._own_root = _own_root(current)

    def _behind_proxy(self) -> bool:
        from cci_builtin_plugins.incus.proxy import AGENT_KEYS, DEVICE

        device = self._devices.get(DEVICE) or {}
        return device.get("bind") == "instance" or any(key in self._config for key in AGENT_KEYS)

    def _leave_proxy(self) -> None:
        """Remove the proxy device and the proxy's variables (see :mod:`.proxy`)."""
        from cci_builtin_plugins.incus.proxy import AGENT_KEYS, DEVICE

        def edit(current: dict[str, Any]) -> bool:
            config, devices = current.get("config") or {}, current.get("devices") or {}
            if (devices.get(DEVICE) or {}).get("bind") != "instance" and not any(key in config for key in AGENT_KEYS):
                return False
            current["config"] = {key: value for key, value in config.items() if key not in AGENT_KEYS}
            current["devices"] = {name: device for name, device in devices.items()
                                  if name != DEVICE or device.get("bind") != "instance"}
            return True

        self._put_edited(f"taking {self.name} off its proxy", edit)
        self._devices.pop(DEVICE, None)
        for key in AGENT_KEYS:
            self._config.pop(key, None)

    def _trust(self, ca: str) -> None:
        """The proxy CA in the container: alone, and appended to a copy of the image's CA bundle."""
        from cci_builtin_plugins.incus.errors import APINotFound
        from cci_builtin_plugins.incus.proxy import CA_BUNDLE, CA_FILE, IMAGE_BUNDLE, bundle

        try:
            image_bundle = self.pull_file(IMAGE_BUNDLE)
        except APINotFound:
            image_bundle = b""
        for path, data in ((CA_FILE, ca.encode()), (CA_BUNDLE, bundle(image_bundle, ca))):
            self.make_directory(str(Path(path).parent))
            self.push_file(path, data, mode=0o644)

    def _check_local(self, mounts: Sequence[Mount]) -> None:
        """Refuse host paths to a remote Incus, which would mount what it has at those paths (before anything is
        made or changed)."""
        if mounts and self._api.endpoint.url:
            raise remote_mount_error(self._api.endpoint.url, mounts[0].source)

    def add_mount(self, mount: Mount) -> None:
        self._check_local([mount])
        self._running = self.status() != "stopped"
        extra, (mount,) = self._mounts_and_config([mount], running=self._running)
        if extra and self._config.get("raw.idmap") != extra["raw.idmap"]:
            if self._running:
                raise BackendError(f"mounting {mount.source} in {self.name}: keeping host ownership needs a "
                                   "raw.idmap, which only applies at start",
                                   hint="stop the container first, or mount without --shift")
        body: dict[str, Any] = {"devices": {mount.device: disk_device(mount)}}
        if extra:
            body["config"] = extra
        self._patch(body, f"mounting {mount.source} in {self.name}")
        self._config.update(extra)
        self._devices.update(body["devices"])
        if self._running:  # mounted at once: checked at once, as after a start
            self._check_mounts()

    def start(self) -> None:
        if self._behind_proxy():  # its proxy may have been stopped as unused since it was configured
            from cci_builtin_plugins.incus.proxy import start_proxy_of

            start_proxy_of(self._api, self._config)
        try:
            self._state("start", f"starting {self.name}")
        except APIError as exc:
            if self._user_map is not None and "idmap" in exc.detail.lower():
                raise BackendError(str(exc), hint=self._user_map.delegation_hint()) from exc
            if "forkstart" in exc.detail and any(key.startswith("limits.") for key in self._config):
                raise BackendError(str(exc), hint="Incus could not start it under its [limits]: change them in "
                                                  "the config, or with --limit KEY=VALUE") from exc
            self._raise_port_failure(exc, self.published_ports())
            raise
        self._running = True
        self._check_mounts()

    def start_warm(self) -> None:
        if self._behind_proxy():  # as for a start
            from cci_builtin_plugins.incus.proxy import start_proxy_of

            start_proxy_of(self._api, self._config)
        self._check_mounts()

    def host_mounts(self) -> list[Mount]:
        from cci_builtin_plugins.incus.mount_check import host_disks
        from cci_core.api import Mount

        return [Mount(name, Path(device["source"]), device["path"], shift=device.get("shift") == "true",
                      readonly=device.get("readonly") == "true")
                for name, device in host_disks(self._devices).items()]

    def _check_mounts(self) -> None:
        """Stop the container if a host mount is not what its device names (see :mod:`.mount_check`)."""
        from cci_builtin_plugins.incus.mount_check import mismatches, misplaced

        if not _has_host_mounts(self._devices):
            return
        try:
            pid = int(self._api.get(f"{self._path}/state", f"reading {self.name}")["pid"])
            mountinfo, host_mountinfo = _read_text(f"/proc/{pid}/mountinfo"), _read_text("/proc/self/mountinfo")
            wrong = misplaced(self._devices, mountinfo, host_mountinfo)
            wrong += [name for name in mismatches(self._devices, mountinfo) if name not in wrong]
        except (OSError, ValueError, KeyError, TypeError, APIError) as exc:
            wrong = [f"(cannot read its mount table: {exc})"]
        if wrong:
            self.stop(force=True)
            raise BackendError(f"{self.name} was stopped: the mount(s) {', '.join(wrong)} did not come from the "
                               "place their device names (a path on the way was swapped for a link, or changed "
                               "while it started)",
                               hint="check those sources for links put there from a container, then start it again")

    def remove_mounts(self, devices: Sequence[str]) -> None:
        nested = [name for name in devices if _nested_disk(self._devices, name)]
        if nested and self.status() != "stopped":  # Incus removes the target it mounted on: the host's file there
            raise BackendError(f"removing {', '.join(nested)} from {self.name}: a mount inside another host mount "
                               "can only be removed while the container is stopped (Incus would delete the file or "
                               "empty directory it was mounted on, which is the host's)",
                               hint=f"stop {self.name} first")

        def edit(current: dict[str, Any]) -> bool:
            if not any(name in (current.get("devices") or {}) for name in devices):
                return False
            current["devices"] = {name: device for name, device in current["devices"].items() if name not in devices}
            return True

        self._put_edited(f"removing mounts from {self.name}", edit)
        for name in devices:
            self._devices.pop(name, None)

    def _put_edited(self, action: str, edit: Callable[[dict[str, Any]], bool]) -> bool:
        """Read the instance, let ``edit`` change its writable fields (False: nothing to do), and put it back;
        read again while someone else changes it meanwhile. Whether it changed anything."""
        for _attempt in range(10):
            response = self._api.request("GET", self._path, f"reading {self.name}")
            current = response.json()["metadata"]
            body = {key: current[key] for key in _WRITABLE if key in current}
            if not edit(body):
                return False
            try:
                self._when_idle(lambda: self._api.call("PUT", self._path, action, body,
                                                       headers={"If-Match": response.headers.get("ETag", "")}))
                return True
            except APIError as exc:
                if exc.status != 412:
                    raise
        raise BackendError(f"{action}: it kept changing under us")

    # -- published ports (:mod:`.ports`) -------------------------------------------------------------------

    def published_ports(self) -> list[PublishedPort]:
        from cci_builtin_plugins.incus.ports import published

        return published(self._devices)

    def publish_port(self, port: PublishedPort) -> None:
        from cci_builtin_plugins.incus import ports

        name, wanted = ports.device_name(port.host_port), ports.device(port)
        if name not in self._devices or self.status() != "running":  # (running, one of ours there holds it)
            ports.check_free(self._api, port, exclude=self.name)
        if self._devices.get(name) == wanted:
            return
        try:
            self._patch({"devices": {name: wanted}}, f"publishing {ports.listen_address(port)} from {self.name}")
        except APIError as exc:  # lost a race for the host port: Incus has taken the device off again
            self._raise_port_failure(exc, [port])
            raise
        self._devices[name] = wanted

    def unpublish_port(self, host_port: int, address: str | None = None) -> bool:
        from cci_builtin_plugins.incus.ports import device_name, published

        name = device_name(host_port)
        removed: list[PublishedPort] = []

        def edit(current: dict[str, Any]) -> bool:
            devices = current.get("devices") or {}
            removed[:] = [port for port in published({name: devices.get(name) or {}})
                          if address is None or port.address == address]
            current["devices"] = {key: value for key, value in devices.items() if key != name}
            return bool(removed)

        self._put_edited(f"unpublishing host port {host_port} from {self.name}", edit)
        if removed:
            self._devices.pop(name, None)
        return bool(removed)

    def _raise_port_failure(self, exc: APIError, ports: Sequence[PublishedPort]) -> None:
        """Raise the one line for a host port taken, when that is why ``exc`` happened."""
        if ports:
            from cci_builtin_plugins.incus.ports import port_failure

            failure = port_failure(self._api, self.name, ports, exc.detail)
            if failure is not None:
                raise failure from None

    def stop(self, *, force: bool = False, timeout: int = 60) -> None:
        try:
            self._state("stop", f"stopping {self.name}", force=force, timeout=timeout)
        except APIError as exc:
            if not is_stopped_already(exc):
                raise
        self._running = False

    def kill(self) -> None:
        from cci_builtin_plugins.incus.halt import kill

        kill(self._api, self.name, self._path, self._when_idle)

    def _state(self, change: str, action: str, **options: Any) -> None:
        body = {"action": change, **options}
        self._when_idle(lambda: self._api.call("PUT", f"{self._path}/state", action, body))

    def delete(self) -> None:
        self._when_idle(lambda: self._api.call("DELETE", self._path, f"deleting {self.name}"))
        if self._behind_proxy():  # the last agent of a proxy gone: the proxy stops (the next launch starts it)
            from cci_builtin_plugins.incus.proxy import stop_unused

            try:
                stop_unused(self._api)
            except APIError:
                pass  # the host guard stops it later

    def _when_idle(self, request: Callable[[], _T]) -> _T:
        """Make ``request``; if Incus says another operation holds the instance, wait for it and retry.

        That happens when another cci process's create of the same name (which will fail) briefly
        locks this instance: an API operation, waited on. And while the container shuts itself down
        (a poweroff inside; a stop after its processes ran out), Incus holds a lock of its own for about
        a second that no API operation or event shows: then a growing pause, up to :data:`BUSY_TIMEOUT`.
        """
        backoff = Backoff(BUSY_TIMEOUT)
        while True:
            try:
                return request()
            except APIError as exc:
                if not is_busy(exc) or backoff.expired() or not (self._wait_for_other_operations() or backoff.pause()):
                    raise

    def _wait_for_other_operations(self) -> bool:
        """Wait (on Incus's /wait endpoint, not a timer) for running operations that touch this instance;
        whether there were any."""
        listing = self._api.get("/1.0/operations", "listing operations", recursion=1) or {}
        waited = False
        for operation in listing.get("running", []):
            resources = operation.get("resources") or {}
            if any(url.split("?")[0].rstrip("/").endswith(f"/instances/{self.name}")
                   for url in resources.get("instances", [])):
                waited = True
                try:
                    self._api.wait(f"/1.0/operations/{operation['id']}", "waiting", timeout=30)
                except APIError:  # it may have failed, or finished and gone already
                    pass
        return waited

    def _patch(self, body: dict[str, Any], action: str) -> None:
        """PATCH merges the given config keys and devices into the instance."""
        self._when_idle(lambda: self._api.call("PATCH", self._path, action, body))

    @property
    def _snapshots(self) -> InstanceSnapshots:
        from cci_builtin_plugins.incus.snapshots import InstanceSnapshots

        return InstanceSnapshots(self._api, self.name, self._when_idle, self._put_edited)

    def snapshots(self) -> list[SnapshotInfo]:
        return self._snapshots.list()

    def create_snapshot(self, name: str) -> SnapshotInfo:
        return self._snapshots.create(name)

    def restore_snapshot(self, name: str) -> None:
        self._snapshots.restore(name)

    def delete_snapshot(self, name: str) -> None:
        self._snapshots.delete(name)

    @cached_property
    def _files(self) -> InstanceFiles:
        return InstanceFiles(self._api, self.name)

    def file_batch(self) -> AbstractContextManager[None]:
        return self._files.batch()

    def push_file(self, path: str, data: bytes, *, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
        self._files.write(path, f"writing {path} in {self.name}", data=data, mode=mode, uid=uid, gid=gid)

    def push_stream(self, path: str, source: BinaryIO, size: int, *, mode: int = 0o600, uid: int = 0,
                    gid: int = 0) -> None:
        self._files.write(path, f"writing {path} in {self.name}", data=source, size=size, mode=mode, uid=uid, gid=gid)

    def pull_file(self, path: str) -> bytes:
        return self._files.pull_file(path)

    def pull_file_to(self, path: str, destination: Path, *, untrusted: Sequence[Path] = ()) -> None:
        self._files.pull_file_to(path, destination, untrusted=untrusted)

    def file_status(self, path: str) -> FileStatus | None:
        return self._files.status(path)

    def remove_file(self, path: str) -> None:
        self._files.remove(path)

    def make_directory(self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self._files.write(path, f"creating {path} in {self.name}", kind="directory", mode=mode, uid=uid, gid=gid)

    def push_tree(self, source: Path, path: str, *, uid: int = 0, gid: int = 0,
                  untrusted: Sequence[Path] = ()) -> None:
        self._files.push_tree(source, path, uid=uid, gid=gid, untrusted=untrusted)

    def pull_tree(self, path: str, destination: Path, *, untrusted: Sequence[Path] = (),
                  on_skip: Callable[[str, str], None] | None = None) -> None:
        self._files.pull_tree(path, destination, untrusted=untrusted, on_skip=on_skip)

    def write_tree(self, path: str, entries: Iterable[TreeEntry], *, uid: int = 0, gid: int = 0) -> None:
        from cci_builtin_plugins.incus.tree_writer import write_tree

        write_tree(self._api, self.name, path, entries, uid=uid, gid=gid)

    def read_tree(self, path: str, limits: TreeLimits) -> AbstractContextManager[Iterator[TreeEntry]]:
        from cci_builtin_plugins.incus.tree_reader import read_tree

        return read_tree(self._api, self.name, path, limits, running=self.status() == "running")

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: int = 0,
        group: int = 0,
        environment: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdout: OutputHandler | None = None,
        stderr: OutputHandler | None = None,
    ) -> ExecResult:
        from cci_builtin_plugins.incus.execute import run_command

        return run_command(self._api, self.name, argv, user=user, group=group, environment=environment, cwd=cwd,
                           stdout=stdout, stderr=stderr, user_groups=self._user_groups(user))

    def start_command(
        self,
        argv: Sequence[str],
        *,
        user: int = 0,
        group: int = 0,
        environment: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: BinaryIO | None = None,
        stdout: OutputHandler | None = None,
        stderr: OutputHandler | None = None,
    ) -> RunningCommand:
        from cci_builtin_plugins.incus.execute import start_command

        return start_command(self._api, self.name, argv, user=user, group=group, environment=environment, cwd=cwd,
                             stdin=stdin, stdout=stdout, stderr=stderr, user_groups=self._user_groups(user))

    def attach(
        self,
        argv: Sequence[str],
        *,
        user: int = 0,
        group: int = 0,
        environment: Mapping[str, str] | None = None,
        cwd: str | None = None,
        signals: bool = False,
    ) -> int:
        from cci_builtin_plugins.incus.terminal import attach_terminal

        return attach_terminal(self._api, self.name, argv, user=user, group=group,
                               environment=dict(environment or {}), cwd=cwd, user_groups=self._user_groups(user),
                               signals=signals)

    def _user_groups(self, user: int) -> bool:
        """Whether a command run as ``user`` can get the user's supplementary groups (see :mod:`.execute`).

        Probed at the first such command in a container of an image not probed before, and kept
        in a label of the container and a property of its image, which the agent inside cannot
        change: later commands, and containers of that image, cost no extra request.
        """
        from cci_builtin_plugins.incus.execute import GROUPS_LABEL, SETPRIV, probe_user_groups

        if user == 0:
            return False
        known = self._config.get(LABEL_PREFIX + GROUPS_LABEL) or self._image_user_groups()
        if known is None:
            known = probe_user_groups(self._api, self.name)
            if known is not None:
                self.set_labels({GROUPS_LABEL: known})
                self._record_image_user_groups(known)
        return known == SETPRIV

    def _image_user_groups(self) -> str | None:
        """What the container's image records about its users' groups (for this very image only)."""
        from cci_builtin_plugins.incus.execute import GROUPS_PROPERTY

        answer, _, fingerprint = self._config.get(f"image.{GROUPS_PROPERTY}", "").partition(" ")
        return answer if answer and fingerprint == self._config.get("volatile.base_image") else None

    def _record_image_user_groups(self, answer: str) -> None:
        """Record ``answer`` on the container's image, for its next containers (best effort: it may be gone)."""
        from cci_builtin_plugins.incus.execute import GROUPS_PROPERTY

        fingerprint = self._config.get("volatile.base_image", "")
        if not fingerprint.isalnum():
            return
        try:
            self._api.call("PATCH", f"/1.0/images/{fingerprint}", f"recording {GROUPS_PROPERTY} on an image",
                           {"properties": {GROUPS_PROPERTY: f"{answer} {fingerprint}"}})
        except APIError:
            pass
