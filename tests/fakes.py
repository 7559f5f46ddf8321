"""In-memory stand-ins for the driver interface, for fast unit tests of the core only.

Everything that touches containers is also tested against the real Incus.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import BinaryIO
from pathlib import Path, PurePosixPath

from cci_core.context import Mount
from cci_core.layout import CONTAINER_HOME
from cci_core.driver import (
    Container,
    ContainerExistsError,
    ContainerInfo,
    ContainerSpec,
    Driver,
    ExecResult,
    FileStatus,
    ImageInfo,
    OutputHandler,
    PolicyNetwork,
    PublishedPort,
    RunningCommand,
    ServerInfo,
    SnapshotInfo,
)
from cci_core.network_policy import NetworkPlan
from cci_core.errors import NotFoundError


class FakeContainer(Container):
    """Records state, labels, mounts, pushed files and executed commands."""

    def __init__(self, name: str, labels: Mapping[str, str] | None = None, driver: FakeDriver | None = None) -> None:
        self._name = name
        self._labels = dict(labels or {})
        self._driver = driver
        self.state = "stopped"
        self.config: dict[str, str] = {}
        self.mounts: list[Mount] = []
        self.files: dict[str, tuple[bytes, int, int, int]] = {}
        self.directories: dict[str, tuple[int, int, int]] = {}
        self.links: dict[str, str] = {}  # symlinks planted by a test: path -> target
        self.commands: list[tuple[str, ...]] = []
        self.network: str | None = None
        self.ports: dict[int, PublishedPort] = {}  # host port -> published port
        #: snapshot name -> (its info, the files, the labels when it was taken)
        self.snapshot_files: dict[str, tuple[SnapshotInfo, dict[str, tuple[bytes, int, int, int]], dict[str, str]]] = {}

    @property
    def name(self) -> str:
        return self._name

    def status(self) -> str:
        return self.state

    def wait_stopped(self, timeout: float = 60) -> bool:
        return self.state == "stopped"

    def labels(self) -> Mapping[str, str]:
        return dict(self._labels)

    def set_labels(self, labels: Mapping[str, str]) -> None:
        self._labels.update(labels)

    def compare_and_set_labels(self, expected: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        lock = self._driver._lock if self._driver else threading.Lock()
        with lock:
            if any(self._labels.get(key, "") != value for key, value in expected.items()):
                return False
            self._labels.update(labels)
            return True

    def configure(self, config: Mapping[str, str], mounts: Sequence[Mount], network: str | None = None) -> None:
        self.config.update(config)
        named = {mount.device for mount in mounts}  # as Incus does: a device of the same name is replaced
        self.mounts = [mount for mount in self.mounts if mount.device not in named] + list(mounts)
        if network is not None:
            self.network = network

    def host_mounts(self) -> list[Mount]:
        return list(self.mounts)

    def start(self) -> None:
        self.state = "running"

    def start_warm(self) -> None:
        assert self.state == "running", f"{self._name} is taken from the pool but not running"
        self.warm_starts = getattr(self, "warm_starts", 0) + 1

    def stop(self, *, force: bool = False, timeout: int = 60) -> None:
        self.state = "stopped"

    def delete(self) -> None:
        if self._driver:
            self._driver.containers.pop(self._name, None)

    def add_mount(self, mount: Mount) -> None:
        self.mounts.append(mount)

    def remove_mounts(self, devices: Sequence[str]) -> None:
        self.mounts = [mount for mount in self.mounts if mount.device not in devices]

    def snapshots(self) -> list[SnapshotInfo]:
        return [info for info, _files, _labels in self.snapshot_files.values()]

    def create_snapshot(self, name: str) -> SnapshotInfo:
        if name in self.snapshot_files:
            raise ContainerExistsError(f"{self._name} already has a snapshot {name!r}")
        info = SnapshotInfo(name, f"2026-01-01T00:00:{len(self.snapshot_files):02d}Z")
        self.snapshot_files[name] = (info, dict(self.files), dict(self._labels))
        return info

    def restore_snapshot(self, name: str) -> None:
        if name not in self.snapshot_files:
            raise NotFoundError(f"{self._name} has no snapshot {name!r}")
        self.files = dict(self.snapshot_files[name][1])  # the files back; labels and mounts kept

    def delete_snapshot(self, name: str) -> None:
        if self.snapshot_files.pop(name, None) is None:
            raise NotFoundError(f"{self._name} has no snapshot {name!r}")

    def published_ports(self) -> list[PublishedPort]:
        return sorted(self.ports.values(), key=lambda port: port.host_port)

    def publish_port(self, port: PublishedPort) -> None:
        self.ports[port.host_port] = port

    def unpublish_port(self, host_port: int, address: str | None = None) -> bool:
        port = self.ports.get(host_port)
        if port is None or address not in (None, port.address):
            return False
        del self.ports[host_port]
        return True

    def push_file(self, path: str, data: bytes, *, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
        self.files[path] = (data, mode, uid, gid)

    def pull_file(self, path: str) -> bytes:
        if path not in self.files:
            raise NotFoundError(f"no file {path}")
        return self.files[path][0]

    def make_directory(self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.directories.setdefault(path, (mode, uid, gid))

    def file_status(self, path: str) -> FileStatus | None:
        if path in self.links:
            return FileStatus("symlink", len(self.links[path]))
        if path in self.files:
            return FileStatus("file", len(self.files[path][0]))
        if (path in self.directories or path in (CONTAINER_HOME, *map(str, PurePosixPath(CONTAINER_HOME).parents))
                or any(name.startswith(path.rstrip("/") + "/") for name in self.files)):  # a file's parents
            return FileStatus("directory")
        return None

    def remove_file(self, path: str) -> None:
        self.links.pop(path, None)
        self.files.pop(path, None)

    def push_tree(self, source: Path, path: str, *, uid: int = 0, gid: int = 0) -> None:
        for file in source.rglob("*"):
            if file.is_file():
                self.push_file(f"{path}/{file.relative_to(source)}", file.read_bytes(), uid=uid, gid=gid)

    def pull_tree(self, path: str, destination: Path) -> None:
        prefix = path.rstrip("/") + "/"
        if path not in self.directories and not any(name.startswith(prefix) for name in self.files):
            raise NotFoundError(f"no directory {path}")
        destination.mkdir(parents=True, exist_ok=True)
        for name, (data, *_rest) in self.files.items():
            if name.startswith(prefix):
                target = destination / name[len(path.rstrip("/")) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)

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
        self.commands.append(tuple(argv))
        return ExecResult(0, "", "")


    def attach(self, argv: Sequence[str], *, user: int = 0, group: int = 0,
               environment: Mapping[str, str] | None = None, cwd: str | None = None, signals: bool = False) -> int:
        self.commands.append(tuple(argv))
        self.attached_with_signals = signals
        return 0

    def start_command(self, argv: Sequence[str], *, user: int = 0, group: int = 0,
                      environment: Mapping[str, str] | None = None, cwd: str | None = None,
                      stdin: BinaryIO | None = None, stdout: OutputHandler | None = None,
                      stderr: OutputHandler | None = None) -> FakeCommand:
        """Runs the command as :meth:`exec` (which tests may replace), after reading all of ``stdin`` into
        :attr:`FakeCommand.input`."""
        data = stdin.read() if stdin is not None else b""
        result = self.exec(argv, user=user, group=group, environment=environment, cwd=cwd, stdout=stdout,
                           stderr=stderr)
        self.started = FakeCommand(data, result.exit_code)
        return self.started


class FakeCommand(RunningCommand):
    """A command that has run: its input, and the signals sent to it."""

    def __init__(self, data: bytes, code: int = 0) -> None:
        self.input, self.code = data, code
        self.signals: list[int] = []

    def signal(self, signum: int) -> None:
        self.signals.append(signum)

    def wait(self) -> int:
        return self.code


class FakeDriver(Driver):
    """A backend that keeps containers in a dict; creation is atomic on the name, as the real one."""

    name = "fake"
    summary = "in-memory test driver"

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.containers: dict[str, FakeContainer] = {}
        self.images: dict[str, ImageInfo] = {}
        self.networks: dict[str, tuple[NetworkPlan, float]] = {}
        self._lock = threading.Lock()

    def server_info(self) -> ServerInfo:
        return ServerInfo(server="fake", version="0", api_version="1.0")

    def create(self, spec: ContainerSpec) -> FakeContainer:
        with self._lock:
            if spec.name in self.containers:
                raise ContainerExistsError(f"container {spec.name} already exists")
            container = FakeContainer(spec.name, spec.labels, self)
            container.mounts.extend(spec.mounts)
            self.containers[spec.name] = container
            return container

    supports_pool = True

    def warm(self, spec: ContainerSpec, network: str | None) -> FakeContainer:
        container = self.create(spec)
        container.config.update(spec.config)
        container.configure({}, [], network)
        container.start()
        return container

    def ensure_network(self, plan: NetworkPlan) -> str:
        import time

        name = f"cci-{plan.key}"
        self.networks[name] = (plan, time.time())
        return name

    def policy_networks(self) -> list[PolicyNetwork]:
        return [PolicyNetwork(name, plan, at, tuple(c.name for c in self.containers.values() if c.network == name))
                for name, (plan, at) in sorted(self.networks.items())]

    def delete_network(self, name: str) -> None:
        del self.networks[name]

    def get(self, name: str) -> FakeContainer:
        try:
            return self.containers[name]
        except KeyError:
            raise NotFoundError(f"no container named {name!r}") from None

    def exists(self, name: str) -> bool:
        return name in self.containers

    def list_containers(self) -> list[ContainerInfo]:
        return [ContainerInfo(c.name, c.state, c.labels(), "", ports=tuple(c.published_ports()))
                for c in self.containers.values()]

    def list_images(self) -> list[ImageInfo]:
        return list(self.images.values())

    def image_exists(self, alias: str) -> bool:
        return any(alias in image.aliases for image in self.images.values())

    def publish(self, container: str, alias: str, *, description: str = "",
                properties: Mapping[str, str] | None = None) -> ImageInfo:
        image = ImageInfo(f"{len(self.images):064x}", (alias,), description, "",
                          properties={**(properties or {}), "description": description})
        self.images[image.fingerprint] = image
        return image

    def import_image(self, tarball: Path, *, description: str = "") -> ImageInfo:
        import hashlib

        image = ImageInfo(hashlib.sha256(tarball.read_bytes()).hexdigest(), (), description, "")
        self.images.setdefault(image.fingerprint, image)
        return self.images[image.fingerprint]

    def tag_image(self, alias: str, fingerprint: str, *, description: str = "") -> None:
        self.images = {fp: image._replace(aliases=tuple(a for a in image.aliases if a != alias))
                       for fp, image in self.images.items()}
        image = self.images[fingerprint]
        self.images[fingerprint] = image._replace(aliases=(*image.aliases, alias))

    def delete_image(self, alias_or_fingerprint: str) -> None:
        self.images = {fp: i for fp, i in self.images.items() if alias_or_fingerprint not in (fp, *i.aliases)}
