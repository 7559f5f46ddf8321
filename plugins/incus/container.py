"""One Incus instance behind cci's :class:`~cci_core.driver.Container` interface."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cci_core.driver import LABEL_PREFIX, Container, ExecResult, OutputHandler
from cci_core.errors import BackendError
from cci_builtin_plugins.incus.errors import incus_errors, is_busy

if TYPE_CHECKING:
    from pylxd.models import Instance

    from cci_builtin_plugins.incus.idmap import UserMap

    from cci_core.context import Mount


_T = TypeVar("_T")

#: the instance fields a PUT replaces
_WRITABLE = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful", "description")


def disk_device(mount: Mount) -> dict[str, str]:
    """The Incus disk device for a mount."""
    device = {"type": "disk", "source": str(mount.source), "path": mount.path}
    if mount.shift:
        device["shift"] = "true"
    if mount.readonly:
        device["readonly"] = "true"
    return device


def labels_of(config: Mapping[str, str]) -> dict[str, str]:
    """cci's labels from an instance config."""
    return {key[len(LABEL_PREFIX):]: value for key, value in config.items() if key.startswith(LABEL_PREFIX)}


class IncusContainer(Container):
    """A pylxd instance; every call is one REST request (or an operation waited on)."""

    def __init__(self, instance: Instance, user_map: UserMap | None = None, idmapped_mounts: bool = True) -> None:
        self._instance = instance
        self._user_map = user_map
        self._idmapped_mounts = idmapped_mounts

    @property
    def name(self) -> str:
        return str(self._instance.name)

    def status(self) -> str:
        # a fresh GET: pylxd's sync() keeps attributes it considers locally modified, and
        # /state fails while the container shuts down ("Invalid PID")
        with incus_errors(f"reading the state of {self.name}"):
            instance = self._instance.api.get().json()["metadata"]
        return str(instance["status"]).lower()

    def wait_stopped(self, timeout: float = 60) -> bool:
        """Wait for the ``instance-shutdown`` event: while systemd powers off, Incus's status flips
        between running and stopped for a moment, so a status alone is not proof."""
        import threading

        from cci_builtin_plugins.incus.websocket import events_resource, on_stop, open_socket

        stopped = threading.Event()
        client = self._instance.client
        with incus_errors(f"watching {self.name}"):
            events = open_socket(client, events_resource(client, "lifecycle"), on_data=on_stop(self.name, stopped.set))
        threading.Thread(target=events.run, daemon=True).start()
        try:
            if self._settled_stopped():
                return True
            return stopped.wait(timeout)
        finally:
            try:
                events.close()
            except Exception:  # already closed
                pass

    def _settled_stopped(self) -> bool:
        """Stopped in both the instance's own view and the listing (they disagree while it stops)."""
        if self.status() != "stopped":
            return False
        with incus_errors(f"listing {self.name}"):
            listing = self._instance.client.api.instances.get(params={"recursion": 1}).json()["metadata"]
        return any(item["name"] == self.name and item["status"] == "Stopped" for item in listing)

    def labels(self) -> Mapping[str, str]:
        return labels_of(self._instance.config)

    def set_labels(self, labels: Mapping[str, str]) -> None:
        config = {LABEL_PREFIX + key: value for key, value in labels.items()}
        self._patch({"config": config}, f"labelling {self.name}")
        self._instance.config.update(config)

    def compare_and_set_labels(self, expected: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        from pylxd.exceptions import LXDAPIException

        endpoint = self._instance.api
        for _attempt in range(10):  # unrelated updates (volatile.* keys) change the ETag too: retry
            with incus_errors(f"reading {self.name}"):
                response = endpoint.get()
            current = response.json()["metadata"]
            if any(current["config"].get(LABEL_PREFIX + key, "") != value for key, value in expected.items()):
                return False
            body = {key: current[key] for key in _WRITABLE if key in current}
            body["config"] = {**current["config"], **{LABEL_PREFIX + key: value for key, value in labels.items()}}
            try:
                updated = self._when_idle(
                    lambda: endpoint.put(json=body, headers={"If-Match": response.headers.get("ETag", "")}))
            except LXDAPIException as exc:
                if exc.response.status_code == 412:
                    continue
                raise BackendError(f"labelling {self.name}: {exc}") from exc
            self._wait(updated, f"labelling {self.name}")
            self._instance.config.update(body["config"])
            return True
        raise BackendError(f"labelling {self.name}: it kept changing under us")

    def configure(self, config: Mapping[str, str], mounts: Sequence[Mount]) -> None:
        config = dict(config)
        raw_idmap = self._user_map is not None and self._user_map.needs_raw_idmap(self._idmapped_mounts)
        if raw_idmap and any(mount.shift for mount in mounts):
            assert self._user_map is not None
            config["raw.idmap"] = self._user_map.raw_idmap()
            mounts = [mount._replace(shift=False) for mount in mounts]
        body = {"config": config, "devices": {mount.device: disk_device(mount) for mount in mounts}}
        self._patch(body, f"configuring {self.name}")

    def start(self) -> None:
        with incus_errors(f"starting {self.name}"):
            try:
                self._when_idle(lambda: self._instance.start(wait=True))
            except Exception as exc:
                if self._user_map is not None and "idmap" in str(exc).lower():
                    raise BackendError(f"starting {self.name}: {exc}", hint=self._user_map.delegation_hint()) from exc
                raise

    def stop(self, *, force: bool = False, timeout: int = 60) -> None:
        with incus_errors(f"stopping {self.name}"):
            self._when_idle(lambda: self._instance.stop(force=force, timeout=timeout, wait=True))

    def delete(self) -> None:
        with incus_errors(f"deleting {self.name}"):
            self._when_idle(lambda: self._instance.delete(wait=True))

    def _when_idle(self, request: Callable[[], _T]) -> _T:
        """Make ``request``; if Incus says another operation holds the instance, wait for it and retry.

        That happens when another cci process's create of the same name (which
        will fail) briefly locks this instance.
        """
        for _attempt in range(20):
            try:
                return request()
            except Exception as exc:
                if not is_busy(exc):
                    raise
                self._wait_for_other_operations()
        return request()

    def _wait_for_other_operations(self) -> None:
        """Wait (on Incus's /wait endpoint, not a timer) for running operations that touch this instance."""
        client = self._instance.client
        listing = client.api.operations.get(params={"recursion": 1}).json()["metadata"] or {}
        for operation in listing.get("running", []):
            resources = operation.get("resources") or {}
            if any(url.split("?")[0].rstrip("/").endswith(f"/instances/{self.name}")
                   for url in resources.get("instances", [])):
                try:
                    client.api.operations[operation["id"]].wait.get(params={"timeout": 30})
                except Exception:  # it may have finished and gone already
                    pass

    def add_mount(self, mount: Mount) -> None:
        self._patch({"devices": {mount.device: disk_device(mount)}}, f"mounting {mount.source} in {self.name}")

    def push_file(self, path: str, data: bytes, *, mode: int = 0o600, uid: int = 0, gid: int = 0) -> None:
        with incus_errors(f"writing {path} in {self.name}"):
            self._instance.files.put(path, data, mode=mode, uid=uid, gid=gid)

    def pull_file(self, path: str) -> bytes:
        with incus_errors(f"reading {path} in {self.name}"):
            return bytes(self._instance.files.get(path))

    def push_tree(self, source: Path, path: str, *, uid: int = 0, gid: int = 0) -> None:
        with incus_errors(f"copying {source} to {self.name}:{path}"):
            self._instance.files.recursive_put(str(source), path, uid=uid, gid=gid)

    def pull_tree(self, path: str, destination: Path) -> None:
        with incus_errors(f"copying {self.name}:{path} to {destination}"):
            self._instance.files.recursive_get(path, str(destination))

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
        with incus_errors(f"running {argv[0] if argv else '?'} in {self.name}"):
            result = self._instance.execute(
                list(argv), environment=dict(environment or {}), decode=False, user=user, group=group, cwd=cwd,
                stdout_handler=stdout, stderr_handler=stderr,
            )
        return ExecResult(result.exit_code, _text(result.stdout), _text(result.stderr))

    def attach(
        self,
        argv: Sequence[str],
        *,
        user: int = 0,
        group: int = 0,
        environment: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> int:
        from cci_builtin_plugins.incus.terminal import attach_terminal

        return attach_terminal(self._instance, argv, user=user, group=group, environment=dict(environment or {}),
                               cwd=cwd)

    def _patch(self, body: dict[str, Any], action: str) -> None:
        """PATCH merges the given config keys and devices into the instance."""
        with incus_errors(action):
            response = self._when_idle(lambda: self._instance.api.patch(json=body))
        self._wait(response, action)

    def _wait(self, response: Any, action: str) -> None:
        """Wait for the background operation a request started, if any: the instance is busy until then."""
        operation = response.json().get("operation") if response.status_code == 202 else None
        if operation:
            with incus_errors(action):
                self._instance.client.operations.wait_for_operation(operation)


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""
