"""The container-backend interface. The Incus driver is one plugin implementing it.

The core and the commands talk to containers only through these classes, so a
second backend can be added as a plugin (``register.add_driver``).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, BinaryIO, ClassVar, NamedTuple

from cci_core.errors import BackendError, CciError

if TYPE_CHECKING:
    from cci_core.config import Config
    from cci_core.config.schema import LimitsConfig
    from cci_core.context import Mount
    from cci_core.network_policy import NetworkPlan, RequestRecord
    from cci_core.secrets import Substitution

#: prefix of the backend config keys that carry cci's own labels (``user.cci.slot``...)
LABEL_PREFIX = "user.cci."

OutputHandler = Callable[[bytes], None]


class ContainerExistsError(BackendError):
    """A container with this name already exists: the atomic claim of a name failed."""


class ServerInfo(NamedTuple):
    """What the backend says about itself."""

    server: str
    version: str
    api_version: str
    details: Mapping[str, str] = MappingProxyType({})


class ExecResult(NamedTuple):
    """The outcome of a command run inside a container."""

    exit_code: int
    stdout: str
    stderr: str


class ContainerInfo(NamedTuple):
    """One container as a listing shows it.

    :param status: lower case: ``running``, ``stopped``, ``frozen``, ``error``...
    :param labels: cci's labels without the ``user.cci.`` prefix.
    :param created: creation time, ISO 8601.
    :param ports: the ports it publishes (:meth:`Container.published_ports`), when the listing holds them.
    """

    name: str
    status: str
    labels: Mapping[str, str]
    created: str
    image: str = ""
    ephemeral: bool = False
    ports: tuple[PublishedPort, ...] = ()


class RunningCommand(ABC):
    """A command running in a container (:meth:`Container.start_command`)."""

    @abstractmethod
    def signal(self, signum: int) -> None:
        """Send signal ``signum`` to the command; nothing once it has ended."""

    @abstractmethod
    def wait(self) -> int:
        """Block until the command has ended and its output is through; its exit code (128 + N when signal N
        killed it). A container that stops meanwhile is a :class:`~cci_core.errors.BackendError`."""


class _ExecOnThread(RunningCommand):
    """:meth:`Container.start_command`'s default: a blocking exec on a thread of its own; signals are lost."""

    def __init__(self, call: Callable[[], int]) -> None:
        from cci_core.background import InBackground

        self._result = InBackground(call, "exec")

    def signal(self, signum: int) -> None:
        pass

    def wait(self) -> int:
        return self._result.result()


class ContainerSpec(NamedTuple):
    """What to create: ``labels`` become ``user.cci.*`` keys, ``config`` other backend keys, ``mounts`` and
    ``network`` (a name :meth:`Driver.ensure_network` returned) as :meth:`Container.configure` puts them on a
    container; ``limits``: the ``[limits]`` a session will start under, which a driver may put on the container as
    it creates it (one update less before the start; the session's ``cci_pre_start`` applies them either way)."""

    name: str
    image: str
    labels: Mapping[str, str] = MappingProxyType({})
    config: Mapping[str, str] = MappingProxyType({})
    mounts: Sequence[Mount] = ()
    ephemeral: bool = False
    limits: LimitsConfig | None = None
    network: str | None = None


class ImageInfo(NamedTuple):
    """One image: its fingerprint, aliases, description, creation time (ISO 8601), size and properties."""

    fingerprint: str
    aliases: tuple[str, ...]
    description: str
    created: str
    size: int = 0
    properties: Mapping[str, str] = MappingProxyType({})


class PolicyNetwork(NamedTuple):
    """A network the driver made to enforce a :class:`~cci_core.network_policy.NetworkPlan`, as it is now.

    :param plan: the plan as enforced (rules, settings, addresses, refresh interval).
    :param refreshed_at: when the plan was last applied, in seconds since the epoch.
    :param used_by: the containers attached to it.
    :param subnet: its IPv4 subnet (CIDR), when it has one.
    :param proxy: for a plan with ``proxy``: the driver's proxy (a container's name), when it has made it;
        ``proxy_status``: whether it runs (``running``, ``stopped``...). ``used_by`` never names the proxy.
    """

    name: str
    plan: NetworkPlan
    refreshed_at: float
    used_by: tuple[str, ...] = ()
    subnet: str = ""
    proxy: str = ""
    proxy_status: str = ""


class PublishedPort(NamedTuple):
    """A TCP port of a container reachable from the host: ``address:host_port`` on the host leads to
    ``container_port`` on the container's own loopback (and nothing leads the other way)."""

    address: str
    host_port: int
    container_port: int


class FileStatus(NamedTuple):
    """What one entry in a container is, its symlink not followed (:meth:`Container.file_status`).

    :param kind: ``file``, ``directory``, ``symlink``, or what else it is (``FIFO``, ``socket``, ``device``).
    :param size: its size in bytes.
    """

    kind: str
    size: int = 0


class SnapshotInfo(NamedTuple):
    """One snapshot of a container: its name and when it was taken (ISO 8601)."""

    name: str
    created: str


#: the kind of a :class:`TreeEntry` that could not be read
UNREADABLE = "unreadable"


class TreeEntry(NamedTuple):
    """One entry of a directory tree read out of a container (:meth:`Container.read_tree`).

    Everything in it is the container's word, to be checked by the reader.

    :param path: relative to the tree's root, ``/``-separated; ``.`` is the root itself.
    :param kind: ``file``, ``directory`` or ``symlink``: drivers pass no other kind, but
        :data:`UNREADABLE`: an entry, with what is below it, that the driver could not read
        (a path too long, too deep, refused by the container's file server); it is left out.
    :param size: a file's size in bytes.
    :param target: a symlink's target, as stored.
    :param data: a file's content, to be read before the next entry is asked for; None when
        the driver did not read it because it is over :attr:`TreeLimits.max_file`.
    """

    path: str
    kind: str
    mode: int = 0o600
    size: int = 0
    target: str = ""
    data: BinaryIO | None = None


class TreeLimits(NamedTuple):
    """Bounds on reading a tree out of a container.

    :param max_file: files larger than this are passed without their content.
    :param max_bytes: what a driver may take in for the whole tree before it gives up.
    :param timeout: seconds for the whole tree.
    :param idle: seconds without any progress before it gives up.
    """

    max_file: int
    max_bytes: int
    timeout: float
    idle: float


class TreeReadError(BackendError):
    """A tree could not be read within its :class:`TreeLimits`, or the container sent something malformed."""


class Container(ABC):
    """A handle on one container. Each driver provides its own."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The container's name."""

    @abstractmethod
    def status(self) -> str:
        """The current status, as in :attr:`ContainerInfo.status` (asks the backend)."""

    @abstractmethod
    def wait_stopped(self, timeout: float = 60) -> bool:
        """Wait until the container has stopped for good; False if it still runs after ``timeout`` seconds."""

    @property
    def user_uid(self) -> int:
        """The uid of the container's unprivileged user, as which the tool runs (the driver's ``container_uid``)."""
        return 1000

    @abstractmethod
    def labels(self) -> Mapping[str, str]:
        """cci's labels (``user.cci.*`` keys without the prefix), as of when this handle was obtained.

        Take a fresh handle (``driver.get``) for a current view; decisions that
        must not race use :meth:`compare_and_set_labels`.
        """

    @abstractmethod
    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Add or replace labels; an empty value removes one."""

    @abstractmethod
    def compare_and_set_labels(self, expected: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        """Atomically apply ``labels`` if every ``expected`` label has its value; return whether applied.

        This is how two cci processes agree on who finishes a session.
        """

    @abstractmethod
    def configure(self, config: Mapping[str, str], mounts: Sequence[Mount], network: str | None = None) -> None:
        """Set backend config keys, add mounts and attach to ``network`` in one update (before a start; on a warm
        container, while it runs: the mounts are there at once); none when it has all of that already (made so
        from its :class:`ContainerSpec`).

        ``network`` is a name returned by :meth:`Driver.ensure_network`; None keeps
        the network the backend's defaults give.
        """

    @abstractmethod
    def host_mounts(self) -> list[Mount]:
        """The host files and directories it mounts, as its devices name them now."""

    @abstractmethod
    def start(self) -> None:
        """Start and wait until the backend reports it running.

        A backend that mounts host paths checks, before anything in the container
        can use them, that each mount came from the place its source names, and
        stops the container and raises :class:`BackendError` if not.
        """

    def start_warm(self) -> None:
        """Finish the start of a container taken from the warm pool (:meth:`Driver.warm`): it runs already, and
        its mounts were added while it ran. Checks them as :meth:`start` does after a start (one that is not what
        its device names stops it, with :class:`BackendError`)."""
        raise BackendError("this backend keeps no warm containers")

    @abstractmethod
    def stop(self, *, force: bool = False, timeout: int = 60) -> None:
        """Stop: a clean shutdown within ``timeout`` seconds, or at once with ``force``."""

    def kill(self) -> None:
        """Kill every process of the container at once and return when none runs: nothing inside can act from then
        on, though the container may still be stopping (:meth:`wait_stopped` waits for that). By default a forced
        :meth:`stop`, which returns once it has stopped for good."""
        self.stop(force=True)

    @abstractmethod
    def delete(self) -> None:
        """Delete the container; it must be stopped."""

    @abstractmethod
    def add_mount(self, mount: Mount) -> None:
        """Attach a host directory (works on a running container too)."""

    @abstractmethod
    def remove_mounts(self, devices: Sequence[str]) -> None:
        """Remove the mounts with these device names (names it does not have are ignored)."""

    @abstractmethod
    def push_file(self, path: str, data: bytes, *, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
        """Write ``data`` to ``path`` inside the container with the given mode and owner."""

    def push_stream(self, path: str, source: BinaryIO, size: int, *, mode: int = 0o600, uid: int = 0,
                    gid: int = 0) -> None:
        """Write the ``size`` bytes ``source`` holds (a regular file, read from where it is) to ``path``, as
        :meth:`push_file` does; a source that ends early is an error. Drivers stream it; this default reads it whole.
        """
        data = source.read(size)
        if len(data) != size:
            raise CciError(f"{getattr(source, 'name', 'the file')} changed while it was copied: "
                           f"{len(data)} bytes instead of {size}")
        self.push_file(path, data, mode=mode, uid=uid, gid=gid)

    @abstractmethod
    def pull_file(self, path: str) -> bytes:
        """Read a regular file from the container (following symlinks); a missing file is a NotFoundError."""

    def pull_file_to(self, path: str, destination: Path, *, untrusted: Sequence[Path] = ()) -> None:
        """Copy a regular file from the container (following symlinks) to host file ``destination``.

        Missing parent directories are made; no symlink is followed in ``untrusted``
        directories, nor at ``destination`` (see :mod:`cci_core.host_files`). Drivers
        stream the content; this default reads it whole.
        """
        from cci_core.host_files import open_parent

        content = self.pull_file(path)
        with open_parent(destination, untrusted=untrusted, create=True) as (directory, name):
            directory.write(name, [content])

    @abstractmethod
    def make_directory(self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        """Create directory ``path`` (its parent must exist); an existing one is left as it is."""

    @abstractmethod
    def push_tree(self, source: Path, path: str, *, uid: int = 0, gid: int = 0,
                  untrusted: Sequence[Path] = ()) -> None:
        """Copy a host directory into the container at ``path``.

        No symlink in the host tree is followed (each is copied as a link), nor one in
        ``untrusted`` directories on the way to it; only regular files are read.
        """

    @abstractmethod
    def pull_tree(self, path: str, destination: Path, *, untrusted: Sequence[Path] = (),
                  on_skip: Callable[[str, str], None] | None = None) -> None:
        """Copy a directory (or one file) from the container to ``destination`` on the host.

        Regular files, directories and symlinks are copied; nothing else is opened
        (FIFOs, sockets, devices): each is passed to ``on_skip`` (its path, what it is).
        No symlink is followed at ``destination`` or below it, nor in ``untrusted``
        directories (see :func:`cci_core.host_files.open_directory`).
        """

    def write_tree(self, path: str, entries: Iterable[TreeEntry], *, uid: int = 0, gid: int = 0) -> None:
        """Write ``entries`` (relative paths, a directory before what it holds) below directory ``path`` (made if
        missing), owned by ``uid``:``gid`` with the entries' modes; merged into what is there. Each file's
        ``data`` is read once, as it is written. This default writes entry by entry with :meth:`make_directory`,
        :meth:`push_stream` and :meth:`push_file`; drivers override it to stream the whole tree at once."""
        import posixpath

        self.make_directory(path, mode=0o755, uid=uid, gid=gid)
        for entry in entries:
            target = posixpath.join(path, entry.path)
            if entry.kind == "directory" and entry.path != ".":
                self.make_directory(target, mode=entry.mode, uid=uid, gid=gid)
            elif entry.kind == "file" and entry.data is not None:
                self.push_stream(target, entry.data, entry.size, mode=entry.mode, uid=uid, gid=gid)
            elif entry.kind == "symlink":
                raise BackendError(f"{self.name}: this driver cannot write the symlink {target}")

    def read_tree(self, path: str, limits: TreeLimits) -> AbstractContextManager[Iterator[TreeEntry]]:
        """The directory ``path`` as entries (the directory itself first), read within ``limits``.

        Only regular files, directories and symlinks are passed, and nothing
        else in the container is opened (a FIFO or a device would block or never
        end). A missing ``path`` is a :class:`~cci_core.errors.NotFoundError`; one
        that is not a directory gives no entries. Exceeding a limit raises
        :class:`TreeReadError`. This default copies with :meth:`pull_tree` into a
        private temporary directory; drivers override it to stream.
        """
        from cci_core.tree_copy import entries_of_pulled_tree

        return entries_of_pulled_tree(self, path, limits)

    @abstractmethod
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
        """Run ``argv`` inside the container and wait for it.

        Output is returned, or streamed to the handlers as it arrives (then the
        result's ``stdout``/``stderr`` are empty). Only ``environment`` is passed:
        never the host's environment.
        """


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
        """Start ``argv`` as :meth:`exec` does, its output streamed to the handlers, and return at once.

        ``stdin`` is read as the command reads (never all at once) and its end is the command's end of
        file (None: end of file at once). The :class:`RunningCommand` sends signals to the command and
        waits for it. This default runs :meth:`exec` on a thread of its own: no input, no signals.
        """
        if stdin is not None:
            raise BackendError(f"{self.name}: this driver cannot pass standard input to a command")
        return _ExecOnThread(lambda: self.exec(argv, user=user, group=group, environment=environment, cwd=cwd,
                                               stdout=stdout, stderr=stderr).exit_code)

    # -- single entries, links never followed: drivers that cannot tell keep these defaults --------------

    def file_status(self, path: str) -> FileStatus | None:
        """What ``path`` itself is (a symlink is not followed); None when nothing is there."""
        raise BackendError(f"{self.name}: this driver cannot tell what a path is without following it")

    def remove_file(self, path: str) -> None:
        """Remove the entry ``path`` that is not a directory (a symlink itself, never what it leads to); nothing
        there is no error."""
        raise BackendError(f"{self.name}: this driver cannot remove a file")

    def file_batch(self) -> AbstractContextManager[None]:
        """A block of many small file operations (the credentials and the brief going in), in a running container: a
        driver may keep one connection open for them until the block ends, opened ahead of the first. This default
        does nothing."""
        return contextlib.nullcontext()

    # -- published ports and snapshots: drivers that cannot do them keep these defaults ----------------

    def published_ports(self) -> list[PublishedPort]:
        """The ports published from this container, as its configuration holds them now."""
        return []

    def publish_port(self, port: PublishedPort) -> None:
        """Publish ``port`` (running or stopped); on a running container a host port that is taken is an error
        at once, and nothing is left half-made."""
        raise BackendError(f"{self.name}: this driver cannot publish ports")

    def unpublish_port(self, host_port: int, address: str | None = None) -> bool:
        """Stop publishing host port ``host_port`` (on ``address``; None: on any); False if it was not published."""
        raise BackendError(f"{self.name}: this driver cannot publish ports")

    def snapshots(self) -> list[SnapshotInfo]:
        """The container's snapshots, oldest first."""
        raise BackendError(f"{self.name}: this driver cannot take snapshots")

    def create_snapshot(self, name: str) -> SnapshotInfo:
        """Take snapshot ``name`` of the container's root filesystem and configuration (running or stopped); a name
        that exists is a :class:`ContainerExistsError`."""
        raise BackendError(f"{self.name}: this driver cannot take snapshots")

    def restore_snapshot(self, name: str) -> None:
        """Put the (stopped) container back to snapshot ``name``; cci's labels are kept as they are now."""
        raise BackendError(f"{self.name}: this driver cannot take snapshots")

    def delete_snapshot(self, name: str) -> None:
        """Delete snapshot ``name``; a missing one is a :class:`~cci_core.errors.NotFoundError`."""
        raise BackendError(f"{self.name}: this driver cannot take snapshots")

    @abstractmethod
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
        """Run ``argv`` on a pty with the user's terminal attached; return its exit code.

        Only ``environment`` (plus the terminal's ``TERM``) is passed. ``argv`` is a client that can
        be attached again (cci attaches ``tmux attach-session``, or ``tmux new-session -A``, which attaches
        to the session once it runs): a driver may run it once more when
        the backend lost track of the first run right after the container started. With ``signals``
        (a one-shot's command, ``cci run -t``, which must not run twice: never run again), SIGINT, SIGTERM and
        SIGHUP sent to cci while it runs go to the command; else they unwind cci as anywhere else. The window
        size follows the terminal's.
        """


class Driver(ABC):
    """A container backend, selected by ``[defaults] driver``. One instance per cci invocation.

    Subclasses set :attr:`name` and :attr:`summary` and are registered with
    ``register.add_driver(cls)``. Constructing a driver must be cheap and must
    not connect: connect on first use, so commands that never touch the
    backend stay fast.
    """

    name: ClassVar[str]
    summary: ClassVar[str]

    #: instance configuration every session container gets, before the plugins' (``cci_instance_config``)
    #: contributions; a plugin may override these keys
    base_config: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def __init__(self, config: Config) -> None:
        self.config = config

    @property
    def container_uid(self) -> int:
        """The uid of the unprivileged user inside the container, as which the tool and ``cci run`` run."""
        return 1000

    def check_container_name(self, name: str) -> str | None:
        """Why ``name`` cannot name a container on this backend (a short phrase with the rule), or None.

        Commands call it before they ask the backend anything, so that a bad name is one clear line.
        This default refuses what no backend's names should hold; a driver adds its own rules.
        """
        return _name_problem(name)

    def check_image_alias(self, alias: str) -> str | None:
        """Why ``alias`` cannot name an image on this backend (a short phrase with the rule), or None."""
        return _name_problem(alias)

    @abstractmethod
    def server_info(self) -> ServerInfo:
        """Connect and describe the backend; raise :class:`~cci_core.errors.BackendError` if unreachable."""

    @abstractmethod
    def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) a container.

        Atomic on the name: if it exists, or another process creates it at the
        same moment, raise :class:`ContainerExistsError`. A missing image is a
        :class:`~cci_core.errors.NotFoundError`.
        """

    @abstractmethod
    def get(self, name: str) -> Container:
        """The container called ``name``, or :class:`~cci_core.errors.NotFoundError`."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether a container called ``name`` exists."""

    @abstractmethod
    def list_containers(self) -> list[ContainerInfo]:
        """Every container in the configured project (cci's and others'), in one request."""

    @abstractmethod
    def list_images(self) -> list[ImageInfo]:
        """Every image."""

    @abstractmethod
    def image_exists(self, alias: str) -> bool:
        """Whether an image alias exists."""

    @abstractmethod
    def publish(self, container: str, alias: str, *, description: str = "",
                properties: Mapping[str, str] | None = None) -> ImageInfo:
        """Publish a (stopped) container as an image under ``alias``, moving the alias if it exists.

        ``properties`` are added to the image's (which start as the container's base image's).
        """

    @abstractmethod
    def import_image(self, tarball: Path, *, description: str = "") -> ImageInfo:
        """Import an image from a unified tarball (``metadata.yaml``, ``templates/``, ``rootfs/``).

        Importing an image that exists already (same fingerprint) returns it. An import interrupted
        (Ctrl+C, a lost connection) leaves no image that was not there before.
        """

    @abstractmethod
    def tag_image(self, alias: str, fingerprint: str, *, description: str = "") -> None:
        """Point ``alias`` at the image ``fingerprint``: created, or moved in one step if it exists."""

    @abstractmethod
    def delete_image(self, alias_or_fingerprint: str) -> None:
        """Delete an image by alias or fingerprint."""

    # -- the warm pool (docs/sessions.md#warm-pool): drivers that cannot add mounts to a running container keep
    #    these defaults

    #: whether :meth:`warm` works: the backend adds mounts and devices to a running container
    supports_pool: ClassVar[bool] = False

    def warm(self, spec: ContainerSpec, network: str | None) -> Container:
        """Create and start a container for the warm pool: ``spec`` (no mounts), on ``network`` (a policy's, or
        None), under the config's ``[limits]``, and ready to take shifted mounts while it runs. A launch later
        configures it as it would a new container (:meth:`Container.configure` adds the mounts at once), then
        calls :meth:`Container.start_warm` in place of :meth:`Container.start`."""
        raise BackendError(f"the {self.name} driver keeps no warm containers", hint="set [pool] size = 0")

    def mounts_host_paths(self) -> bool:
        """Whether containers of this driver can mount paths of this host; when not (a server elsewhere), a
        session's workspace is copied in and back instead (:mod:`cci_core.workspace_sync`). Asked before a launch
        makes anything."""
        return True

    def image_fingerprint(self, image: str) -> str | None:
        """The fingerprint of the image a create of ``image`` would use now (None: not a local image)."""
        for info in self.list_images():
            if image in info.aliases or info.fingerprint == image:
                return info.fingerprint
        return None

    # -- network policies: drivers that cannot enforce them keep these defaults -----------------------

    def ensure_network(self, plan: NetworkPlan) -> str:
        """Make (or bring up to date) the network that enforces ``plan``; return its name.

        The rules must live outside the container and be in force before a
        container attached to the network first starts. Idempotent, and safe
        when two processes ensure the same plan at once.
        """
        raise BackendError(f"the {self.name} driver cannot enforce network policies",
                           hint="use --network open, or a driver that supports them")

    def policy_networks(self) -> list[PolicyNetwork]:
        """Every network :meth:`ensure_network` made."""
        return []

    def delete_network(self, name: str) -> None:
        """Delete a network :meth:`ensure_network` made (it must be unused)."""
        raise BackendError(f"the {self.name} driver has no network {name!r}")

    def route_secrets(self, network: str, substitutions: Sequence[Substitution]) -> None:
        """Have the proxy of ``network`` (a plan with ``proxy``) send each value in place of its placeholder.

        Only in request headers to the substitution's hosts; the placeholders of earlier
        launches keep working. Called before a container using ``network`` starts.
        """
        raise BackendError(f"the {self.name} driver cannot pass secrets by placeholder",
                           hint="remove the [secrets] entries, or use a driver with a filtering proxy")

    def network_log(self, network: str, *, follow: bool = False) -> Iterator[RequestRecord]:
        """The requests the proxy of ``network`` saw, oldest first; with ``follow``, then new ones as they come."""
        raise BackendError(f"the {self.name} driver keeps no request log for {network!r}")


def _name_problem(name: str) -> str | None:
    """What makes ``name`` unusable as any name (empty, whitespace, unprintable characters), or None."""
    if not name:
        return "it is empty"
    bad = next((char for char in name if char.isspace() or not char.isprintable()), None)
    return None if bad is None else f"it contains {bad!r}: names have no spaces or control characters"
